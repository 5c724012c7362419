"""The engine's log: one line per job event, readable or JSON (--log-format json)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from queuectl.timefmt import iso


class EventLog:
    def __init__(self, fmt: str = "text", stream: TextIO | None = None) -> None:
        self.fmt = fmt
        self.stream = stream if stream is not None else sys.stderr

    def emit(self, event: str, message: str, **fields: Any) -> None:
        now = time.time()
        if self.fmt == "json":
            line = json.dumps({"ts": iso(now), "event": event, **fields}, default=str)
        else:
            line = f"{iso(now)} {message}"
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken log pipe must never stop the engine
            pass
