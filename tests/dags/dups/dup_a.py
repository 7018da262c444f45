from flowkit import Flow


def noop(ctx):
    return None


flow = Flow("shared_name").step("a", noop)
