"""The engine's log: one line per job event, readable or JSON (--log-format json)."""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any, TextIO

from queuectl.timefmt import iso


class EventLog:
    def __init__(self, fmt: str = "text", stream: TextIO | None = None) -> None:
        self.fmt = fmt
        self.stream = stream if stream is not None else sys.stderr
        self._second = -1
        self._prefix = ""

    def _stamp(self, now: float) -> str:
        """iso(now), its date and time formatted once a second: a busy engine writes thousands of lines a second."""
        frac, whole = math.modf(now)
        second, us = int(whole), round(frac * 1e6)  # as datetime.fromtimestamp rounds
        if us >= 1_000_000:
            second, us = second + 1, us - 1_000_000
        if second != self._second:
            self._second, self._prefix = second, (iso(second) or "")[:-5]  # without ".000Z"
        return f"{self._prefix}.{us // 1000:03d}Z"

    def emit(self, event: str, message: str, **fields: Any) -> None:
        now = time.time()
        if self.fmt == "json":
            line = json.dumps({"ts": self._stamp(now), "event": event, **fields}, default=str)
        else:
            line = f"{self._stamp(now)} {message}"
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken log pipe must never stop the engine
            pass
