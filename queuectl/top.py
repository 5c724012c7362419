"""`queuectl top`: the queue at a glance, redrawn in place until Ctrl-C.

Counts per state, engines alive, running jobs with their elapsed time and command, completed and failed attempts
per minute over the last 10 minutes, and the newest failures with their error. On a terminal it redraws in place
on the alternate screen (like top) and fits the terminal's width (80 columns is the design width); when stdout
is not a terminal it prints plain text frames (`--once`: one frame), without any escape sequence.

Cost to the engine: per refresh, three small reads (state counters, engines, running jobs); the 10-minute
window (attempts by minute, newest failures) is read at most every 2 s, through the attempts_finished index.
All of it in WAL mode, so the engine's writes never wait for it.

`render()` is pure (a Frame in, lines out), so the layout is tested without a terminal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import time
from typing import TYPE_CHECKING, TextIO

from queuectl.errors import QueueCtlError
from queuectl.models import JobState
from queuectl.stats import Stats
from queuectl.textfmt import one_line
from queuectl.timefmt import human_duration

if TYPE_CHECKING:
    from queuectl.api import Queue, Status

#: The window of rates and failures, and its buckets.
WINDOW_S = 600.0
BUCKET_S = 60.0
#: The windowed stats are read at most this often, whatever the refresh interval.
STATS_EVERY_S = 2.0
DESIGN_WIDTH = 80

# Styles are SGR parameters; "" is plain.
BOLD, DIM, REVERSE = "1", "2", "7"
STATE_STYLE = {JobState.PENDING: "", JobState.PROCESSING: "36", JobState.COMPLETED: "32", JobState.FAILED: "33",
               JobState.DEAD: "31"}

Segment = tuple[str, str]
Line = list[Segment]

ENTER_SCREEN = "\x1b[?1049h\x1b[?25l"  # alternate screen, cursor hidden
LEAVE_SCREEN = "\x1b[?25h\x1b[?1049l"
HOME, CLEAR_EOL, CLEAR_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"


@dataclasses.dataclass(frozen=True)
class Frame:
    """Everything one screen shows."""

    now: float
    home: str
    status: Status
    #: The last WINDOW_S (None if the backend cannot compute stats).
    stats: Stats | None


def _num(n: int) -> str:
    return f"{n:,}"


def fit(line: Line, width: int) -> Line:
    """Cut a line to `width` characters (an ellipsis marks the cut)."""
    out: Line = []
    left = width
    total = sum(len(text) for text, _ in line)
    for text, style in line:
        if left <= 0:
            break
        if len(text) > left or (total > width and len(text) == left):
            out.append((text[: max(0, left - 1)] + "…", style))
            left = 0
            break
        out.append((text, style))
        left -= len(text)
    return out


def plain(line: Line) -> str:
    return "".join(text for text, _ in line).rstrip()


def styled(line: Line) -> str:
    return "".join(f"\x1b[{style}m{text}\x1b[0m" if style and text else text for text, style in line)


def _counts(status: Status) -> list[Line]:
    by_state = status.counts.by_state
    head: Line = []
    values: Line = []
    for state, sgr in STATE_STYLE.items():
        head.append((f"{state.value.upper():>12}", DIM))
        style = sgr + ";1" if sgr else BOLD
        values.append((f"{_num(by_state.get(state, 0)):>12}", style))
    head.append((f"{'TOTAL':>12}", DIM))
    values.append((f"{_num(status.counts.total):>12}", BOLD))
    # Jobs waiting on dependencies and cancelled ones get their own line, shown only when there are some: the
    # five main states and the total fill the 80 columns.
    others: Line = []
    for state in (JobState.WAITING, JobState.CANCELLED):
        if by_state.get(state, 0):
            others += [(f"  {state.value} ", ""), (_num(by_state[state]), BOLD)]
    return [head, values, others] if others else [head, values]


def _engines(frame: Frame) -> list[Line]:
    s, now = frame.status, frame.now
    age = s.counts.oldest_pending_age_s
    lines: list[Line] = [[("oldest due job waiting ", ""), (human_duration(age) if age is not None else "-", BOLD),
                          ("   engines alive ", ""), (str(len(s.engines)), BOLD)]]
    if not s.engines:
        lines.append([("  no engine running: start one with `queuectl run`", "33")])
    for e in s.engines:
        running = sum(1 for j in s.running if j.engine_id == e.id)
        beat = max(0.0, now - e.heartbeat_at)
        lines.append([(f"  {e.id}", ""), (f"  pid {e.pid}  ", DIM), (f"{running}/{e.workers} busy", ""),
                      (f"  up {human_duration(max(0.0, now - e.started_at))}  heartbeat ", DIM),
                      (f"{human_duration(beat)} ago", "31" if beat > 15 else DIM)])
    return lines


def _window(stats: Stats | None) -> list[Line]:
    if stats is None:
        return [[("rates and failures are not available for this database backend", DIM)]]
    lines: list[Line] = [[
        (f"last {WINDOW_S / 60:g} min  ", BOLD), ("completed ", ""), (_num(stats.completed), "32"),
        ("  failed ", ""), (_num(stats.failed), "33" if stats.failed else ""),
        ("  timed out ", ""), (_num(stats.timed_out), "33" if stats.timed_out else ""),
        ("  dead ", ""), (_num(stats.dead), "31" if stats.dead else ""),
        ("  success ", ""), ("-" if stats.success_rate is None else f"{stats.success_rate * 100:.1f}%", ""),
    ]]
    buckets = int(WINDOW_S // BUCKET_S)
    done, failed = [0] * buckets, [0] * buckets
    for start, ok, bad in stats.series:
        k = round((start - stats.since) / BUCKET_S)
        if 0 <= k < buckets:
            done[k] += ok
            failed[k] += bad
    lines.append([("minutes ago ", DIM)] + [(f"{buckets - k:>6}", DIM) for k in range(buckets)])
    lines.append([("  completed ", "")] + [(f"{_num(n):>6}", "32" if n else DIM) for n in done])
    lines.append([("     failed ", "")] + [(f"{_num(n):>6}", "33" if n else DIM) for n in failed])
    return lines


def _running(frame: Frame, room: int | None) -> list[Line]:
    running = frame.status.running
    lines: list[Line] = [[(f"RUNNING ({len(running)})", BOLD)]]
    if not running:
        lines.append([("  nothing running", DIM)])
        return lines
    lines.append([(f"  {'JOB':<20} {'ELAPSED':>8}  COMMAND", DIM)])
    shown = running if room is None else running[: max(1, room)]
    for job in shown:
        took = human_duration(max(0.0, frame.now - job.started_at)) if job.started_at else "-"
        lines.append([(f"  {one_line(job.id, 20):<20} {took:>8}  ", ""), (one_line(job.command, 200), "")])
    if len(shown) < len(running):
        lines.append([(f"  ... and {len(running) - len(shown)} more", DIM)])
    return lines


def _failures(stats: Stats | None, width: int) -> list[Line]:
    if stats is None:
        return []
    lines: list[Line] = [[("NEWEST FAILURES", BOLD), (f" (last {WINDOW_S / 60:g} min)", DIM)]]
    if not stats.recent_failures:
        lines.append([("  none", DIM)])
    for f in stats.recent_failures:
        when = time.strftime("%H:%M:%S", time.gmtime(f.finished_at))
        ident = one_line(f"{f.job_id} #{f.attempt}", 20)
        error = one_line(f.error or f.status, 24)
        lines.append([(f"  {when}  ", DIM), (f"{ident:<20} ", ""), (f"{error:<24} ", "31"),
                      (one_line(f.command or "(deleted)", max(0, width - 58)), DIM)])
    return lines


def render(frame: Frame, *, width: int = DESIGN_WIDTH, height: int | None = None) -> list[Line]:
    """The screen: every line at most `width` characters, at most `height` lines (the running list shrinks)."""
    width = max(20, width)
    clock = time.strftime("%H:%M:%S UTC", time.gmtime(frame.now))
    title = " queuectl top  " + one_line(frame.home, max(1, width - len(clock) - 18))
    pad = max(1, width - len(title) - len(clock) - 1)
    header: Line = [(title + " " * pad + clock + " ", REVERSE)]
    top = [header, [], *_counts(frame.status), [], *_engines(frame), [], *_window(frame.stats), []]
    bottom = [[], *_failures(frame.stats, width)]
    room = None if height is None else height - len(top) - len(bottom) - 3
    lines = top + _running(frame, room) + bottom
    if height is not None:
        lines = lines[:height]
    return [fit(line, width) for line in lines]


async def _frame(q: Queue, stats: Stats | None) -> Frame:
    return Frame(now=time.time(), home=_home_text(str(q.home)), status=await q.status(), stats=stats)


def _home_text(home: str) -> str:
    user_home = os.path.expanduser("~")
    return "~" + home[len(user_home):] if user_home not in ("", "/") and home.startswith(user_home) else home


async def run(q: Queue, *, interval_s: float, once: bool, out: TextIO, tty: bool, color: bool) -> None:
    """Draw frames until cancelled (Ctrl-C); one frame with once. On a terminal, redraw in place."""
    stats: Stats | None = None
    stats_at = -1e9
    live = tty and not once
    if live:
        out.write(ENTER_SCREEN)
        out.flush()
    try:
        while True:
            if time.monotonic() - stats_at >= max(STATS_EVERY_S, interval_s):
                try:
                    stats = await q.stats(WINDOW_S, samples=0, bucket_s=BUCKET_S, top=5)
                except QueueCtlError:
                    stats = None
                stats_at = time.monotonic()
            frame = await _frame(q, stats)
            if live:
                size = shutil.get_terminal_size((DESIGN_WIDTH, 24))
                lines = render(frame, width=size.columns, height=size.lines)
                draw = styled if color else plain
                out.write(HOME + "".join(draw(line) + CLEAR_EOL + "\r\n" for line in lines[:-1])
                          + (draw(lines[-1]) + CLEAR_EOL if lines else "") + CLEAR_BELOW)
            else:
                lines = render(frame, width=DESIGN_WIDTH)
                draw = styled if (color and tty) else plain
                out.write("\n".join(draw(line) for line in lines) + "\n")
            out.flush()
            if once:
                return
            if not live:
                out.write("\n")
            await asyncio.sleep(interval_s)
    finally:
        if live:
            out.write(LEAVE_SCREEN)
            out.flush()
