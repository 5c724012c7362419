"""Text from jobs, shown to people: control characters escaped, and on one line cut to a width."""

from __future__ import annotations

import re

#: Control characters other than tab, newline and carriage return, shown as \xNN: a job's output or command (which
#: may come from another user of a shared queue) must not drive the reader's terminal (ESC sequences can retitle
#: it, rewrite the screen or, with OSC 52, set the clipboard). `queuectl logs` alone prints output as written.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0))}
#: The same characters, found at C speed: most text has none, and the engine shows every job's command.
_HAS_CONTROL = re.compile(f"[{re.escape(''.join(map(chr, _CONTROLS)))}]").search


def printable(text: str) -> str:
    return text.translate(_CONTROLS) if _HAS_CONTROL(text) else text


def one_line(text: str | None, width: int) -> str:
    """Whitespace folded to single spaces, control characters escaped, cut to width with an ellipsis."""
    if not text or width <= 0:
        return ""
    line = " ".join(text.split())
    cut = len(line) > width
    line = printable(line[:width])  # only what can be shown: escaping never shortens it
    return line[: width - 1] + "…" if cut or len(line) > width else line
