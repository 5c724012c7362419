"""One exception tree; each class carries the exit code the CLI returns for it."""

from __future__ import annotations

import sys


def report(message: str, code: int) -> int:
    """How every command ends on an error: one line on stderr; returns the exit code."""
    sys.stderr.write(f"queuectl: error: {' '.join(shown(message).split())}\n")
    return code


def shown(text: str) -> str:
    """text with the bytes of a command line that are not UTF-8 (os.fsdecode's lone surrogates) as \\xNN, as the
    user typed them, and other unpaired surrogates (JSON escapes) as \\uNNNN: printable on any UTF-8 stream."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def not_utf8(exc: UnicodeEncodeError) -> str:
    """Where a text could not be encoded as UTF-8, in the user's terms."""
    code = ord(exc.object[exc.start])
    what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"unpaired surrogate \\u{code:04x}"
    return f"{what} at character {exc.start + 1}"


class QueueCtlError(Exception):
    """Base of every error queuectl reports to a user. The message is one line."""

    #: Process exit code when this error ends a CLI command.
    exit_code = 1


class ValidationError(QueueCtlError):
    """The input was malformed or out of range (bad JSON, unknown field, negative timeout...)."""

    exit_code = 2


class NotFoundError(QueueCtlError):
    """A job, engine or key that does not exist."""


class ConflictError(QueueCtlError):
    """The operation clashes with the current state (duplicate id, deleting a running job...)."""


class StoreError(QueueCtlError):
    """The database cannot be opened, read or written (not a database, newer schema, disk full...)."""


class StoreFullError(StoreError):
    """The disk (or the database's size limit) is full: writes fail until space returns."""


class StoreUnavailableError(StoreError):
    """The database server cannot be reached (connection lost or refused): an engine waits and reconnects."""


class StoreGoneError(StoreError):
    """The database was removed or replaced under a running engine: retrying cannot help."""


class HomeError(QueueCtlError):
    """The data directory cannot be created or used."""
