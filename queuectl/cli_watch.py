"""CLI commands for watching the queue: stats, top, the web dashboard. Registered on cli.app when cli.py imports
this module."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from queuectl import output
from queuectl.cli import DASHBOARD_PORT, JsonOpt, _dashboard_server, app, call, ctx
from queuectl.errors import ValidationError
from queuectl.timefmt import parse_duration_s


@app.command()
def stats(
    since: Annotated[str, typer.Option(help="The window, back from now: 15m, 1h, 7d.")] = "1h",
    as_json: JsonOpt = False,
) -> None:
    """Counts, success rate, throughput, run-time and queue-wait percentiles, busiest failing commands."""
    from queuectl.stats import stats_dict, stats_text

    since_s = parse_duration_s(since, "--since")
    result = call(lambda q: q.stats(since_s))
    if as_json:
        output.print_json(stats_dict(result))
    else:
        sys.stdout.write("".join(line + "\n" for line in stats_text(result)))


@app.command()
def top(
    interval: Annotated[str, typer.Option(help="Time between refreshes: 1s, 500ms, 5s.")] = "1s",
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
) -> None:
    """A live view of the queue, redrawn until Ctrl-C (plain text frames when stdout is not a terminal)."""
    import os

    from queuectl import top as top_view

    interval_s = parse_duration_s(interval, "--interval")
    if interval_s < 0.1:
        raise ValidationError(f"--interval must be at least 100ms; got {interval!r}")
    tty = sys.stdout.isatty()
    color = tty and "NO_COLOR" not in os.environ and os.environ.get("TERM", "") != "dumb"
    try:
        call(lambda q: top_view.run(q, interval_s=interval_s, once=once, out=sys.stdout, tty=tty, color=color))
    except KeyboardInterrupt:
        return  # Ctrl-C is how top ends


@app.command()
def dashboard(
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs a token.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port).")] = DASHBOARD_PORT,
    token: Annotated[str | None, typer.Option(
        envvar="QUEUECTL_DASHBOARD_TOKEN", help="Required on every request (Bearer header, ?token= or cookie).")]
    = None,
) -> None:
    """Serve the web dashboard and Prometheus /metrics until Ctrl-C."""
    server = _dashboard_server()

    def ready(url: str) -> None:
        sys.stdout.write(f"dashboard on {url} (Ctrl-C stops it){' - token required' if token else ''}\n")
        sys.stdout.flush()

    asyncio.run(server.serve(ctx().home, ctx().database_url, host=host, port=port,
                             token=server.token_from_env(token), on_ready=ready))




