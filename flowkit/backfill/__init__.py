"""Backfills: a range of a flow's schedule intervals run again as one object.

``plan`` is pure (dates, the intervals of a range in either direction, what to do with an
interval that already has a run, the estimated finish); the store side is
flowkit/store/backfill_ops.py and the run cap is flowkit/store/run_lanes.py.
"""
