"""A command's own variables (QUEUECTL_JOB_ID and the like) set by its shell, as `export NAME='value' ...; `
before the command, rather than passed to the spawn as a whole environment.

Why: given an environment, `subprocess` turns every one of its variables into `KEY=value` bytes in the event loop's
thread at each spawn, with the GIL held (16 us with 38 variables), where a spawn without one hands the engine's own
`environ` to `execve` as it is. On 2,000 x `true` at 4 workers that was 4% of the engine's throughput.

The price: the shell itself does not carry the variables in its environment, only in its command line (what `ps`
shows); every process it starts carries them. So whatever looks for a job's processes by their variables reads both
(procs.environ, through `exported`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_QUOTE = "'\"'\"'"  # ends the single quotes, a quoted ', opens them again
_ENTRY = re.compile(rb"""([A-Za-z_][A-Za-z0-9_]*)='((?:[^']|'"'"')*)'([ ;])""")
_HEAD = b"export "


def line(variables: Mapping[str, str], command: str) -> str | None:
    """`command` preceded by the export of `variables` (names must be valid shell names: ours are), or None when a
    value holds a newline: the exports must stay on the command's first line, so that the shell's messages name
    the command's own line numbers."""
    if not variables:
        return command
    entries = " ".join(f"{name}='{value.replace(chr(39), _QUOTE)}'" for name, value in variables.items())
    return None if "\n" in entries else f"export {entries}; {command}"


def exported(command_line: bytes) -> list[bytes]:
    """The `KEY=value` entries a `line` exports, from the shell's command line (/proc/PID/cmdline: `/bin/sh`, `-c`,
    the line, NUL-separated); [] for any other command line."""
    shell, _, rest = command_line.partition(b"\0")
    flag, _, text = rest.partition(b"\0")
    if shell != b"/bin/sh" or flag != b"-c" or not text.startswith(_HEAD):
        return []
    entries: list[bytes] = []
    pos = len(_HEAD)
    while match := _ENTRY.match(text, pos):
        entries.append(match[1] + b"=" + match[2].replace(_QUOTE.encode(), b"'"))
        if match[3] == b";":
            return entries
        pos = match.end()
    return []  # not a line of ours after all
