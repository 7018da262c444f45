"""Observability: a step's output captured per attempt, and the fields (flow, run, step,
attempt) every daemon log line carries. Not public API."""
