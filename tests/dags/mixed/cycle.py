"""A flow whose steps form a cycle a -> b -> c -> a; step "a" is defined on line 12."""

from flowkit import Flow


def noop(ctx):
    return None


flow = Flow("cyclic").step("a", noop, after="c").step("b", noop, after="a").step("c", noop, after="b")
