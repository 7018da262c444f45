"""Does not compile: a `return` outside any function, on line 6 (a SyntaxError from compile())."""

from flowkit import Flow

flow = Flow("broken_syntax").step("a", lambda: None)
return flow  # noqa: F706  (the SyntaxError the loader must report, line 6)
