"""Cheap wake-ups from any shell to the engines: one datagram per engine on a Unix socket in the data directory.

A lost datagram only costs latency: engines also poll the store's change token.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from queuectl.paths import WAKE_DIR


def socket_path(home: Path, engine_id: str) -> Path:
    return home / WAKE_DIR / f"{engine_id}.sock"


#: sun_path holds 108 bytes; longer paths are reached through the directory's /proc/self/fd entry.
_MAX_SOCKET_PATH = 100


@contextlib.contextmanager
def _address(directory: Path, name: str) -> Iterator[str]:
    full = str(directory / name)
    if len(os.fsencode(full)) < _MAX_SOCKET_PATH:
        yield full
        return
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


#: What a wake-up says: something changed; or a job was cancelled (the engine then looks for its own to stop).
CHANGED = b"!"
CANCEL = b"c"


def wake_engines(home: Path, message: bytes = CHANGED) -> int:
    """Send one byte to every engine socket of this home. Returns how many were reached. Never raises."""
    reached = 0
    try:
        names = os.listdir(home / WAKE_DIR)
    except OSError:
        return 0
    if not names:
        return 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for name in names:
            if not name.endswith(".sock"):
                continue
            try:
                with _address(home / WAKE_DIR, name) as address:
                    sock.sendto(message, address)
                reached += 1
            except BlockingIOError:
                reached += 1  # its buffer is full of wake-ups already
            except ConnectionRefusedError:
                with contextlib.suppress(OSError):  # nobody listens: an engine that died without cleaning up
                    os.unlink(home / WAKE_DIR / name)
            except OSError:
                pass
    return reached


def bind(home: Path, engine_id: str) -> socket.socket:
    """The engine's end: a non-blocking datagram socket, 0600."""
    path = socket_path(home, engine_id)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    old = os.umask(0o177)
    try:
        with _address(path.parent, path.name) as address:
            sock.bind(address)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    return sock


def drain(sock: socket.socket) -> bytes:
    """Read every pending datagram; returns what they said, joined ("" if there was none)."""
    received = b""
    while True:
        try:
            data = sock.recv(64)
        except (BlockingIOError, InterruptedError):
            return received
        received += data[:1] or CHANGED
