"""The torture session: each scenario reports its figures (load, faults, what held) through the `figures` fixture;
they are printed as a table at the end of the run and written as JSON to $QUEUECTL_TORTURE_SUMMARY (default:
<tmp>/queuectl-torture-summary.json), so the README's Reliability table can be filled from a real run."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.torture.support import FIGURES


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A dict the test fills with its figures; the time taken and the outcome are added here."""
    found: dict[str, Any] = {}
    FIGURES[request.node.name] = found
    started = time.monotonic()
    yield found
    found["seconds"] = round(time.monotonic() - started, 1)


def _summary_path() -> Path:
    return Path(os.environ.get("QUEUECTL_TORTURE_SUMMARY") or Path(tempfile.gettempdir()) /
                "queuectl-torture-summary.json")


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    if call.when == "call" and item.name in FIGURES:
        FIGURES[item.name]["outcome"] = "passed" if call.excinfo is None else (
            "skipped" if call.excinfo.errisinstance(pytest.skip.Exception) else "FAILED")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    path = _summary_path()
    try:
        path.write_text(json.dumps(FIGURES, indent=2, default=str) + "\n")
    except OSError as exc:
        terminalreporter.write_line(f"cannot write {path}: {exc}")
    terminalreporter.section("torture figures")
    for name, found in FIGURES.items():
        terminalreporter.write_line(f"{name}:")
        for key, value in found.items():
            terminalreporter.write_line(f"    {key:<34} {value}")
    terminalreporter.write_line(f"(also in {path})")
