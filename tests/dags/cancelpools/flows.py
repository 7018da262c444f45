"""Flows for the tests of what a cancel stops on each worker pool
(tests/integration/test_cancel_pools.py). Steps that leave a trace write to the folder named
by CANCEL_TEST_DIR in the worker's environment."""

import os
import time

from flowkit import Flow

#: A queue no worker of the tests serves: its steps stay queued until cancelled.
UNSERVED = "cancel-pools-unserved"


def naps(ctx):
    with open(os.path.join(os.environ["CANCEL_TEST_DIR"], "python.started"), "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(30)  # a worker thread cannot be interrupted in this call
    with open(os.path.join(os.environ["CANCEL_TEST_DIR"], "python.ended"), "w") as fh:
        fh.write("ended")
    return {"slept": 30}


def never_runs(ctx):
    return {"ran": True}


# One shell step and one Python step running, two steps queued where no worker takes them.
mixed = (
    Flow("mixed")
    .shell("waits", 'echo $$ > "$CANCEL_TEST_DIR/shell.pid"; sleep 30 & echo $! > "$CANCEL_TEST_DIR/child.pid"; wait')
    .step("naps", naps)
    .step("parked_a", never_runs, queue=UNSERVED)
    .step("parked_b", never_runs, queue=UNSERVED)
)
# One shell step alone: what a worker on the solo pool, busy with it, does on a cancel.
lone_shell = Flow("lone_shell").shell(
    "waits", 'echo $$ > "$CANCEL_TEST_DIR/shell.pid"; sleep 30 & echo $! > "$CANCEL_TEST_DIR/child.pid"; wait'
)
