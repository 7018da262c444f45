"""Flows for tests/unit/test_overlap.py: one hourly flow per overlap= policy, and one
that leaves it to the default."""

from flowkit import Flow


def noop(ctx):
    return ctx.step


skip = Flow("ov_skip", schedule="0 * * * *", overlap="skip").step("a", noop)
buffer_one = Flow("ov_buffer_one", schedule="0 * * * *", overlap="buffer_one").step("a", noop)
buffer_all = Flow("ov_buffer_all", schedule="0 * * * *", overlap="buffer_all").step("a", noop)
cancel_other = Flow("ov_cancel_other", schedule="0 * * * *", overlap="cancel_other").step("a", noop)
default = Flow("ov_default", schedule="0 * * * *").step("a", noop)
