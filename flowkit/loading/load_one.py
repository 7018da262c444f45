"""Child-process entry point of the loader: ``python -m flowkit.loading.load_one PATH FOLDER OUT [STACK]``.

With STACK, SIGUSR1 makes the child write its stack there (the loader sends it to a module
that hangs, to report the line it was running before stopping it).
"""

from __future__ import annotations

import json
import sys

from .loader import import_in_child


def main() -> None:
    path, folder, out = sys.argv[1], sys.argv[2], sys.argv[3]
    if len(sys.argv) > 4:
        import faulthandler
        import signal

        if hasattr(signal, "SIGUSR1"):
            stack = open(sys.argv[4], "w", encoding="utf-8")  # noqa: SIM115 - open for the process's life
            faulthandler.register(signal.SIGUSR1, file=stack, all_threads=True)
    payload = import_in_child(path, folder)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(payload, fh)


if __name__ == "__main__":
    main()
