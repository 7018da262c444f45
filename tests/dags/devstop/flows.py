"""Flows for the tests of how `flowkit dev` stops (tests/unit/test_dev_stop.py). Steps that
must leave a trace write to the folder named by DEV_TEST_DIR in the environment."""

import os
import time

from flowkit import Flow


def sleeps_a_minute(ctx):
    with open(os.path.join(os.environ["DEV_TEST_DIR"], "python.started"), "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(60)  # one blocking call: nothing in a worker thread interrupts it
    return {"slept": 60}


def ignores_its_timeout(ctx):
    time.sleep(30)  # in a worker thread the timeout cannot interrupt this
    return {"slept": 30}


def quick(ctx):
    return {"quick": True}


long_python = Flow("long_python").step("sleeps", sleeps_a_minute).step("after", quick, after="sleeps")
# The shell leads its process group; its `sleep` child's pid is written down for the test.
long_shell = Flow("long_shell").shell(
    "waits", 'echo $$ > "$DEV_TEST_DIR/shell.pid"; sleep 60 & echo $! > "$DEV_TEST_DIR/child.pid"; wait'
)
stubborn_timeout = Flow("stubborn_timeout").step("stubborn", ignores_its_timeout, timeout=2)
quick_flow = Flow("quick").step("only", quick)
