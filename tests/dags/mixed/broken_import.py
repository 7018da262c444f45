"""Fails at import time on line 6 (the import of a module that does not exist)."""

from flowkit import Flow

flow = Flow("never_loaded").step("a", lambda: None)
import flowkit_no_such_module_xyz  # noqa: E402,F401  (line 6)
