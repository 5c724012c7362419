"""exports: the variables a job's shell exports before its command, and reading them back from its command line."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from queuectl import exports

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
VALUES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0\n"), max_size=40)


def as_cmdline(line: str) -> bytes:
    return b"\0".join([b"/bin/sh", b"-c", os.fsencode(line)]) + b"\0"


@given(st.dictionaries(NAMES, VALUES, min_size=1, max_size=5), VALUES)
def test_what_a_line_exports_is_read_back_from_its_command_line(variables: dict[str, str], command: str) -> None:
    line = exports.line(variables, command)
    assert line is not None and line.endswith(f"; {command}")
    assert exports.exported(as_cmdline(line)) == [
        f"{name}={value}".encode() for name, value in variables.items()]


def test_a_value_with_a_newline_makes_no_line() -> None:
    """The exports would push the command to a later line, and the shell's messages would name the wrong one."""
    assert exports.line({"A": "1", "QUEUECTL_HOME": "/tmp/two\nlines"}, "echo (") is None


def test_no_variables_leave_the_command_as_it_is() -> None:
    assert exports.line({}, "-x") == "-x"


def test_other_command_lines_export_nothing() -> None:
    others = [b"", b"sleep\x00300\x00", b"/bin/sh\x00-c\x00echo hi\x00", b"/bin/bash\x00-c\x00export A='1'; x\x00",
              b"/bin/sh\x00-c\x00export A=1; x\x00", b"/bin/sh\x00-c\x00export A='1\x00",
              b"/bin/sh\x00-c\x00export A='1' B\x00"]
    for cmdline in others:
        assert exports.exported(cmdline) == [], cmdline
