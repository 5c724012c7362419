"""The child watcher the engine installs on Python 3.11 (engine_options.install_child_watcher): real processes, their
exit codes, and output through asyncio's own pipes, with asyncio's exit callback replaced by a same-thread one."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import pytest

from queuectl.engine_options import install_child_watcher
from tests.helpers import out_of_files

pytestmark = pytest.mark.skipif(sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"),
                                reason="child watchers exist up to Python 3.11, and this one needs pidfd_open")


@pytest.fixture
async def watcher() -> AsyncIterator[asyncio.AbstractChildWatcher]:
    undo = install_child_watcher()
    installed = asyncio.get_child_watcher()
    assert type(installed).__name__ == "_SameThreadPidfdWatcher"
    yield installed
    undo()


async def test_many_concurrent_commands_each_report_their_own_exit_code(
    watcher: asyncio.AbstractChildWatcher,
) -> None:
    async def run(code: int) -> int:
        proc = await asyncio.create_subprocess_shell(f"exit {code}")
        return await asyncio.wait_for(proc.wait(), 30)

    codes = list(range(60))
    assert await asyncio.gather(*(run(code) for code in codes)) == codes


async def test_an_exit_reaches_the_transport_without_a_thread_safe_wake_up(
    watcher: asyncio.AbstractChildWatcher, monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    wake_ups = 0
    thread_safe = loop.call_soon_threadsafe

    def counting(*args: object, **kwargs: object) -> asyncio.Handle:
        nonlocal wake_ups
        wake_ups += 1
        return thread_safe(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
    for code in (0, 1, 2):
        proc = await asyncio.create_subprocess_shell(f"exit {code}")
        assert await asyncio.wait_for(proc.wait(), 30) == code
    assert wake_ups == 0


async def test_a_command_killed_by_a_signal_reports_it(watcher: asyncio.AbstractChildWatcher) -> None:
    proc = await asyncio.create_subprocess_shell("kill -KILL $$")
    assert await asyncio.wait_for(proc.wait(), 30) == -9


async def test_output_through_asyncio_pipes_arrives_whole_with_the_exit_code(
    watcher: asyncio.AbstractChildWatcher,
) -> None:
    # 1 MiB on stdout, then exit at once: communicate() must still return every byte with the exit code.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'x' * (1 << 20)); sys.exit(3)",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert (len(out), err, proc.returncode) == (1 << 20, b"", 3)


async def test_a_callback_of_its_own_is_called_as_the_watcher_api_says(
    watcher: asyncio.AbstractChildWatcher,
) -> None:
    done: asyncio.Future[tuple[int, int, str]] = asyncio.get_running_loop().create_future()
    pid = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 7"], os.environ)  # noqa: ASYNC221 - a bare child to watch
    watcher.add_child_handler(pid, lambda *args: done.set_result(args), "extra")
    assert await asyncio.wait_for(done, 30) == (pid, 7, "extra")


async def test_a_child_is_still_watched_when_no_pidfd_can_be_opened(watcher: asyncio.AbstractChildWatcher) -> None:
    """Out of open files between the fork and pidfd_open: the child runs all the same, so its exit must still be
    reported (by polling), not lost with the command left unwatched."""
    done: asyncio.Future[tuple[int, int, str]] = asyncio.get_running_loop().create_future()
    pid = os.posix_spawn("/bin/sh", ["sh", "-c", "sleep 0.2; exit 5"], os.environ)  # noqa: ASYNC221 - a bare child
    with out_of_files():
        with pytest.raises(OSError):
            os.close(os.pidfd_open(pid))
        watcher.add_child_handler(pid, lambda *args: done.set_result(args), "extra")
    assert await asyncio.wait_for(done, 30) == (pid, 5, "extra")
    with pytest.raises(ChildProcessError):  # reaped: no zombie left
        os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG does not wait


async def test_a_polled_child_can_be_unwatched(watcher: asyncio.AbstractChildWatcher) -> None:
    pid = os.posix_spawn("/bin/sh", ["sh", "-c", "sleep 0.3; exit 2"], os.environ)  # noqa: ASYNC221 - a bare child
    called: list[object] = []
    with out_of_files():
        watcher.add_child_handler(pid, lambda *args: called.append(args))
    assert watcher.remove_child_handler(pid) is True
    assert watcher.remove_child_handler(pid) is False
    # The loop runs meanwhile (0.3 s, polls come every 1-50 ms): a poll left behind would have reaped the child.
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2
    assert called == []
