"""Calls sys.exit on line 7 while being imported."""

import sys

from flowkit import Flow

sys.exit(3)

flow = Flow("never_reached").step("a", lambda: None)
