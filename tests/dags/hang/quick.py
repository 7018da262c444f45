from flowkit import Flow

flow = Flow("quick").step("a", lambda: None)
