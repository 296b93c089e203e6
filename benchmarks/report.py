"""How a benchmark hands over its result: one JSON document on stdout, and the same in a file
when asked (kept in benchmarks/results/ with the command that made it, which the document holds)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def command_line() -> str:
    return "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])


def emit(doc: dict[str, Any], path: Path | None = None) -> None:
    text = json.dumps(doc, indent=1)
    print(text)
    if path is not None:
        Path(path).write_text(text + "\n")
