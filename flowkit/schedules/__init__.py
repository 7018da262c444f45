"""Schedules in a time zone: data intervals, DST policy, catch-up and overlap decisions.

Pure logic (no store, no clock of its own): the scheduler passes `now` and the flow's
last scheduled interval and acts on what these functions return.
"""
