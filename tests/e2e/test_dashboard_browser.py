"""The dashboard in headless Chromium, against a real engine (`queuectl run --dashboard`): live counts, retrying a
dead job from its page, the live log, escaping in the DOM; and the README's screenshots (docs/dashboard.png,
docs/top.png)."""

from __future__ import annotations

import html
import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import DOCS
from tests.engine_helpers import EngineProc, Engines, cli_ok, enqueue, enqueue_many
from tests.helpers import proc_argv, proc_env, wait_until

TIMEOUT_MS = 30_000


@pytest.fixture
def served(home: Path, tmp_path: Path) -> Iterator[tuple[str, EngineProc]]:
    """A real engine with 3 workers serving its dashboard; yields (url, engine)."""
    with Engines(home, tmp_path) as engines:
        engine = engines.start("--dashboard", "--dashboard-port", "0", workers=3)
        url = engine.wait_log(r"dashboard on (http://127\.0\.0\.1:\d+/)").group(1)
        yield url, engine
        engine.send(signal.SIGTERM)
        engine.wait_log(r" stopping: ")
        engine.send(signal.SIGTERM)  # a second time: stop now, whatever still runs
        engine.wait_exit(timeout=30)


def count(page: Any, state: str) -> int:
    return int(page.locator(f'.counts [data-count="{state}"]').inner_text().replace(",", ""))


def test_counts_change_live_as_jobs_complete(served: tuple[str, EngineProc], home: Path, page: Any) -> None:
    from playwright.sync_api import expect

    url, _ = served
    page.goto(url)
    expect(page.locator("#live")).to_have_text("live", timeout=TIMEOUT_MS)
    assert count(page, "completed") == 0
    page.evaluate("window.__notReloaded = true")
    enqueue_many(home, [{"id": f"quick-{i}", "command": "sleep 0.2"} for i in range(6)])
    expect(page.locator('.counts [data-count="completed"]')).to_have_text("6", timeout=TIMEOUT_MS)
    assert page.evaluate("window.__notReloaded") is True  # updated in place, not by reloading
    expect(page.locator('.counts [data-count="pending"]')).to_have_text("0")
    enqueue(home, "sleep 20 # still-running")
    expect(page.locator("#running")).to_contain_text("still-running", timeout=TIMEOUT_MS)
    expect(page.locator('.counts [data-count="processing"]')).to_have_text("1")
    expect(page.locator("#engines")).to_contain_text("3")  # workers of the one engine


def test_a_dead_job_is_retried_from_its_page_and_then_completes(served: tuple[str, EngineProc], home: Path,
                                                                tmp_path: Path, page: Any) -> None:
    from playwright.sync_api import expect

    url, _ = served
    flag = tmp_path / "fixed"
    job_id = enqueue(home, f"test -f {flag} && echo recovered-after-fix", max_retries=0)
    wait_until(lambda: '"state": "dead"' in cli_ok(home, "inspect", job_id, "--json"), timeout_s=30,
               what="the job to die")
    page.goto(f"{url}jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("dead")
    expect(page.locator("#attempts")).to_contain_text("exit code 1")
    flag.write_text("")  # the cause is fixed
    page.locator("#retry").click()
    expect(page.locator(".flash")).to_contain_text("sent back to the queue")
    # The page follows the job by itself: it reloads as the job runs and ends.
    expect(page.locator("#job-state")).to_have_text("completed", timeout=TIMEOUT_MS)
    expect(page.locator("#log")).to_contain_text("recovered-after-fix", timeout=TIMEOUT_MS)
    expect(page.locator("#attempts tbody tr")).to_have_count(2)


def test_the_job_page_tails_its_log_live(served: tuple[str, EngineProc], home: Path, page: Any) -> None:
    from playwright.sync_api import expect

    url, _ = served
    job_id = enqueue(home, "for i in 1 2 3 4 5 6 7 8; do echo tail-line-$i; sleep 0.4; done")
    wait_until(lambda: '"state": "processing"' in cli_ok(home, "inspect", job_id, "--json"), timeout_s=30,
               what="the job to start")
    page.goto(f"{url}jobs/{job_id}")
    expect(page.locator("#log")).to_contain_text("tail-line-1", timeout=TIMEOUT_MS)
    expect(page.locator("#log-status")).to_have_text("following (live)", timeout=TIMEOUT_MS)
    expect(page.locator("#log")).to_contain_text("tail-line-8", timeout=TIMEOUT_MS)
    expect(page.locator("#job-state")).to_have_text("completed", timeout=TIMEOUT_MS)
    text = page.locator("#log").inner_text()
    assert [f"tail-line-{i}" for i in range(1, 9)] == re.findall(r"tail-line-\d", text)


def test_enqueue_from_the_page_and_script_shows_as_text(served: tuple[str, EngineProc], home: Path,
                                                       page: Any) -> None:
    from playwright.sync_api import expect

    url, _ = served
    page.goto(url)
    hostile = "echo '<script>window.__pwned = 1</script><img src=x onerror=window.__pwned=2>'"
    page.fill('input[name="command"]', hostile)
    page.fill('input[name="id"]', "from-the-page")
    page.click("form.enqueue button[type=submit]")
    expect(page).to_have_url(re.compile(r"/jobs/from-the-page\?done=enqueued$"))
    expect(page.locator("#job-command")).to_have_text(hostile)
    expect(page.locator("#job-state")).to_have_text("completed", timeout=TIMEOUT_MS)
    expect(page.locator("#log")).to_contain_text("<script>window.__pwned = 1</script>", timeout=TIMEOUT_MS)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#log script, #log img, #job-command img").count() == 0
    page.goto(f"{url}jobs?q=pwned")
    expect(page.locator("#jobs")).to_contain_text("<script>window.__pwned")
    assert page.evaluate("window.__pwned") is None


# ---- the README's screenshots --------------------------------------------------------------------------------------


def test_screenshot_of_the_dashboard(served: tuple[str, EngineProc], home: Path, page: Any) -> None:
    from playwright.sync_api import expect

    url, _ = served
    jobs: list[dict[str, Any]] = []
    for i in range(40):
        jobs.append({"id": f"thumb-{i:03d}", "command": f"convert photos/{i:03d}.jpg -resize 50% thumbs/{i:03d}.jpg"
                     f" 2>/dev/null; sleep 0.{i % 4 + 1}"})
    for i in range(4):
        jobs.append({"id": f"backup-{i}", "command": f"tar -czf /nonexistent/backup-{i}.tgz /etc/hostname",
                     "max_retries": 0})
    jobs.append({"id": "report-weekly", "command": "python3 -m reports.weekly --email team@example.com; sleep 60"})
    jobs.append({"id": "reindex", "command": "sleep 60 # ./manage.py search_index --rebuild"})
    jobs.append({"id": "cleanup", "command": "find /tmp/cache -mtime +7 -delete", "delay": "1h"})
    enqueue_many(home, jobs)
    page.goto(url)
    expect(page.locator('.counts [data-count="completed"]')).to_have_text("40", timeout=TIMEOUT_MS)
    expect(page.locator('.counts [data-count="dead"]')).to_have_text("4", timeout=TIMEOUT_MS)
    expect(page.locator('.counts [data-count="processing"]')).to_have_text("2", timeout=TIMEOUT_MS)
    page.reload()  # the overview's window stats are drawn at load
    expect(page.locator("#live")).to_have_text("live", timeout=TIMEOUT_MS)
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "dashboard.png"), full_page=True)
    assert (DOCS / "dashboard.png").stat().st_size > 10_000


_SGR_COLORS = {"31": "#ff6b6b", "32": "#5fd37a", "33": "#f0c05a", "36": "#5fc8e8"}


def ansi_to_html(screen: str) -> str:
    """The few SGR codes `queuectl top` uses (bold, dim, reverse, red/green/yellow/cyan) as styled spans."""
    out = []
    for line in screen.split("\n"):
        parts = re.split(r"\x1b\[([0-9;]*)m", line)
        cells = [html.escape(parts[0])]
        for k in range(1, len(parts), 2):
            codes, text = parts[k].split(";"), html.escape(parts[k + 1])
            if not text or codes in (["0"], [""]):
                cells.append(text)
                continue
            style = []
            for code in codes:
                if code == "1":
                    style.append("font-weight:bold")
                elif code == "2":
                    style.append("color:#8a93a6")
                elif code == "7":
                    style.append("background:#d8dee9;color:#1d2230")
                elif code in _SGR_COLORS:
                    style.append(f"color:{_SGR_COLORS[code]}")
            cells.append(f'<span style="{";".join(style)}">{text}</span>')
        out.append("".join(cells))
    return "\n".join(out)


def capture_top_frame(home: Path, columns: int = 80, rows: int = 24) -> str:
    """Run `queuectl top` on a pseudo-terminal of columns x rows; return one whole frame (with its colors). The
    data directory is shown as the default one (~/.local/share/queuectl) through a symbolic link."""
    import fcntl
    import struct
    import termios

    user = home.parent / "user"
    (user / ".local" / "share").mkdir(parents=True, exist_ok=True)
    link = user / ".local" / "share" / "queuectl"
    if not link.exists():
        link.symlink_to(home)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = proc_env(link, {"TERM": "xterm-256color", "HOME": str(user)})
    proc = subprocess.Popen(proc_argv("top", "--interval", "500ms"), env=env, stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while seen.count(b"\x1b[H") < 4 and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                seen += os.read(master, 65536)
        frames = seen.split(b"\x1b[H")
        assert len(frames) >= 4, seen
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    frame = frames[-2].decode("utf-8", "replace")
    frame = frame.replace("\x1b[K", "").replace("\x1b[J", "").replace("\r", "")
    return frame


def test_screenshot_of_top(served: tuple[str, EngineProc], home: Path, page: Any) -> None:
    jobs: list[dict[str, Any]] = [{"id": f"resize-{i:02d}", "command": f"convert in/{i:02d}.png -resize 50% "
                                   f"out/{i:02d}.png 2>/dev/null; sleep 0.{i % 3 + 1}"} for i in range(30)]
    jobs += [{"id": "deploy-docs", "command": "sleep 45 # make -C docs html && rsync -a docs/_build/ web:/srv/docs/"},
             {"id": "nightly-etl", "command": "sleep 45 # python3 -m etl.nightly --since yesterday"},
             {"id": "fetch-feeds", "command": "echo 'curl: (6) Could not resolve host' >&2; exit 6",
              "max_retries": 0},
             {"id": "flaky-upload", "command": "echo 'upload failed: 503'; exit 75", "max_retries": 0}]
    enqueue_many(home, jobs)
    wait_until(lambda: json.loads(cli_ok(home, "status", "--json"))["counts"]["completed"] == 30, timeout_s=60,
               what="the jobs to finish")
    frame = capture_top_frame(home)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", frame)
    assert "RUNNING (2)" in plain and "NEWEST FAILURES" in plain and "flaky-upload" in plain
    assert all(len(line) <= 80 for line in plain.split("\n"))
    body = ansi_to_html(frame)
    page.set_viewport_size({"width": 760, "height": 560})
    page.set_content(
        "<!doctype html><html><body style='margin:0;background:#10141c'>"
        "<pre style='margin:0;padding:14px 16px;font:13.5px/1.35 \"DejaVu Sans Mono\",\"Liberation Mono\",monospace;"
        f"color:#e4e8f1;background:#10141c;display:inline-block'>{body}</pre></body></html>")
    DOCS.mkdir(exist_ok=True)
    page.locator("pre").screenshot(path=str(DOCS / "top.png"))
    assert (DOCS / "top.png").stat().st_size > 10_000
