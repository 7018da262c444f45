from flowkit import Flow


def other(ctx):
    return None


flow = Flow("shared_name").step("b", other)
