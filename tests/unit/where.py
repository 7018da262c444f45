"""Helpers for checking that an error points at the test line that caused it.

A test marks the line it expects with a trailing ``# L:<tag>`` comment.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def _lines(path: Path) -> tuple[str, ...]:
    return tuple(path.read_text().splitlines())


def line_of(tag: str, path: Path) -> int:
    """The line number, in ``path``, of the one line that ends with ``# L:<tag>``."""
    hits = [i for i, text in enumerate(_lines(path), start=1) if text.rstrip().endswith(f"# L:{tag}")]
    assert len(hits) == 1, f"marker L:{tag} found {len(hits)} times in {path.name}"
    return hits[0]


def assert_where(err: BaseException, path: Path, tag: str, *, flow: str | None, step: str | None) -> None:
    """``err`` names ``flow`` and ``step`` and points at the line of ``path`` marked ``tag``."""
    assert getattr(err, "flow", None) == flow
    assert getattr(err, "step", None) == step
    assert getattr(err, "lineno", None) == line_of(tag, path)
    assert Path(getattr(err, "path", "")) == path
    assert str(err).startswith(f"{err.path}:{err.lineno}: ")  # type: ignore[attr-defined]
    assert "\n" not in str(err)  # one line
