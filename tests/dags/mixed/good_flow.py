"""Two well-formed flows; the module also prints to stdout while being imported."""

from flowkit import Flow, Param

print("hello from good_flow: this must not corrupt the loader's result")


def extract(ctx):
    """Fetch the rows."""
    return [1, 2, 3]


def transform(ctx):
    return [x * 2 for x in ctx.result_of("extract")]


def load(ctx):
    return None


etl = (
    Flow("etl", schedule="*/5 * * * *", owner="data", tags=["daily"], params={"day": Param(str)})
    .step("extract", extract)
    .step("transform", transform, after="extract", retries=2, timeout="30s")
    .then("load", load)
)

report = Flow("report", params={"limit": 10}).step("build", extract)
