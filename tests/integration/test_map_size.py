"""A 10,000-element map in-process (InlineHarness over SQLite): it completes, and its statements
per element stay within the bound the unit test checks at 60 and 600 elements. Here, not in
the unit tests, for its one to two minutes."""

from __future__ import annotations

import pytest

from ..unit.test_map import _run_counting


@pytest.mark.slow
def test_a_map_of_10000_elements_completes_within_bounded_statements(sqlite_store):  # type: ignore[no-untyped-def]
    statements, seconds = _run_counting(sqlite_store, "squares", 10_000)
    print(
        f"\n10,000-element map in-process: {seconds:.1f} s, {statements} statements "
        f"({statements / 10_000:.1f} per element)"
    )
    # Measured on 2 shared vCPUs: ~12 statements and ~4-12 ms per element (the claim and
    # finish of an ordinary step on SQLite); the bounds leave room for a loaded machine.
    assert statements / 10_000 < 15, statements
    assert seconds < 240, seconds
