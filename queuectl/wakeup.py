"""Cheap wake-ups from any shell to the engines: one datagram per engine on a Unix socket in the data directory.

A lost datagram only costs latency: engines also poll the store's change token.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from queuectl.paths import WAKE_DIR

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop


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


class Listener:
    """An engine's socket, read by the event loop: on_wakeup gets what each batch of datagrams said.

    check() binds it again when its file was removed under the running engine (the data directory cleaned, a tmp
    cleaner): wake-ups would otherwise miss it for good, and every change from another shell wait for the change
    check (1 s) instead of a few milliseconds."""

    def __init__(self, home: Path, engine_id: str, on_wakeup: Callable[[bytes], None]) -> None:
        self._home, self._engine_id = home, engine_id
        self.path = socket_path(home, engine_id)
        self._on_wakeup = on_wakeup
        self._sock: socket.socket | None = None
        self._inode = 0

    def open(self) -> None:
        """Bind and start reading; raises OSError if the socket cannot be bound."""
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        sock = bind(self._home, self._engine_id)
        try:
            inode = os.stat(self.path).st_ino
            _running_loop().add_reader(sock.fileno(), self._readable, sock)
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                self.path.unlink()  # nobody reads it: senders would take it for a live engine's
            raise
        self._sock, self._inode = sock, inode

    def _readable(self, sock: socket.socket) -> None:
        received = drain(sock)
        if received:
            self._on_wakeup(received)

    def check(self) -> bool:
        """True if the socket's file was gone (or replaced) and it is bound again; raises OSError if it cannot be."""
        try:
            if os.stat(self.path).st_ino == self._inode:
                return False
        except FileNotFoundError:
            pass
        self._stop_reading()
        self.open()
        return True

    def _stop_reading(self) -> None:
        if self._sock is not None:
            _running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        self._stop_reading()
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:  # not another engine's that took the name meanwhile
                self.path.unlink()


def _running_loop() -> AbstractEventLoop:
    import asyncio  # here, not at the top: the enqueue fast path imports this module and never needs asyncio

    return asyncio.get_running_loop()
