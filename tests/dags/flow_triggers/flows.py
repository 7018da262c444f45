"""Flows started by other flows' ends and by dataset writes (tests/unit/test_triggers*.py)."""

from __future__ import annotations

from flowkit import Dataset, Flow, FlowDone, Param


def load(ctx):  # type: ignore[no-untyped-def]
    if ctx.params.get("fail"):
        raise RuntimeError("asked to fail")
    return {"rows": 3}


def noop(ctx):  # type: ignore[no-untyped-def]
    return None


orders = Flow("orders", params={"fail": Param(bool, default=False)}).step("load", load, writes="s3://lake/orders")
writer_a = Flow("writer_a").step("write", noop, writes=["s3://lake/a"])
writer_b = Flow("writer_b").step("write", noop, writes="s3://lake/b")

report = Flow("orders_report", trigger_on=[FlowDone("orders")]).step("report", noop)
audit = Flow("orders_audit", trigger_on=FlowDone("orders", states=("success", "failed"))).step("audit", noop)
on_orders_data = Flow("orders_data", trigger_on=[Dataset("s3://lake/orders")], max_active_runs=2).step("use", noop)

lake_any = Flow("lake_any", trigger_on=[Dataset("s3://lake/a"), Dataset("s3://lake/b")], trigger_mode="any").step(
    "use", noop
)
lake_all = Flow("lake_all", trigger_on=[Dataset("s3://lake/a"), Dataset("s3://lake/b")]).step("use", noop)
lake_batch = Flow("lake_batch", trigger_on=[Dataset("s3://lake/a")], trigger_batch=True).step("use", noop)
