"""Sleeps for 30 s at module level: the loader must stop it at its timeout."""

import time

from flowkit import Flow

time.sleep(30)

flow = Flow("too_slow").step("a", lambda: None)
