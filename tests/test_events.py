"""The engine's event log: its cached timestamps read exactly as timefmt.iso would write them."""

from __future__ import annotations

import io
import json

from hypothesis import given
from hypothesis import strategies as st

from queuectl.events import EventLog
from queuectl.timefmt import iso

# Whole seconds, milliseconds on a rounding edge, and arbitrary floats up to the year 2100.
times = st.one_of(
    st.floats(min_value=0, max_value=4.1e9, allow_nan=False),
    st.integers(min_value=0, max_value=4_100_000_000).map(lambda s: s + 0.9995),
    st.integers(min_value=0, max_value=4_100_000_000).map(lambda s: s + 0.9999996),
)


@given(st.lists(times, min_size=1, max_size=20))
def test_stamps_match_iso_whatever_the_order_of_times(stamps: list[float]) -> None:
    log = EventLog(stream=io.StringIO())
    for now in stamps:  # the cached second changes, repeats and goes back
        assert log._stamp(now) == iso(now)


def test_a_json_line_carries_the_stamp_and_the_fields() -> None:
    out = io.StringIO()
    EventLog("json", out).emit("completed", "ignored in json", job="j1", attempt=2)
    line = json.loads(out.getvalue())
    assert line["event"] == "completed" and line["job"] == "j1" and line["attempt"] == 2
    assert line["ts"].endswith("Z") and len(line["ts"]) == len("2026-01-01T00:00:00.000Z")
