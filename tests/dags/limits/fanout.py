"""150 independent short steps: a wide fan-out for backpressure."""

from flowkit import Flow

WIDTH = 150


def quick(ctx):
    return ctx.step


lim_fanout = Flow("lim_fanout")
for i in range(WIDTH):
    lim_fanout.step(f"f{i:03d}", quick)
