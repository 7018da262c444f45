"""Child-process entry point of the loader: ``python -m flowkit._load_one PATH FOLDER OUT``."""

from __future__ import annotations

import json
import sys

from .loader import import_in_child


def main() -> None:
    path, folder, out = sys.argv[1], sys.argv[2], sys.argv[3]
    payload = import_in_child(path, folder)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(payload, fh)


if __name__ == "__main__":
    main()
