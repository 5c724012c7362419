"""The due-time heap: when the engine should next look at the store. No I/O.

The store is the truth; the heap only decides when to ask it. It holds a bounded window of the soonest due
(run_at, job id) pairs, so memory does not grow with the queue: `horizon` is the latest due time the window
covers, and anything due later is left in the store until a refill reaches it. Entries are never removed when
a job is deleted or claimed elsewhere: a stale entry costs one claim that finds nothing.
"""

from __future__ import annotations

import heapq
import math


class DueHeap:
    def __init__(self, capacity: int = 512) -> None:
        self.capacity = capacity
        self._heap: list[tuple[float, str]] = []
        #: Due times after this are not in the window (inf: the window holds everything runnable).
        self.horizon = math.inf

    def __len__(self) -> int:
        return len(self._heap)

    def rebuild(self, soonest: list[tuple[float, str]]) -> None:
        """Replace the window with the store's `capacity` soonest entries, soonest first."""
        self._heap = list(soonest)
        heapq.heapify(self._heap)
        self.horizon = soonest[-1][0] if len(soonest) >= self.capacity else math.inf

    def push(self, run_at: float, job_id: str) -> None:
        """A job the engine itself scheduled (a retry). Beyond the horizon it waits for a refill."""
        if run_at > self.horizon:
            return
        heapq.heappush(self._heap, (run_at, job_id))
        if len(self._heap) > 2 * self.capacity:
            kept = heapq.nsmallest(self.capacity, self._heap)
            self._heap = kept  # a sorted list is a valid heap
            self.horizon = kept[-1][0]

    def pop_due(self, now: float) -> int:
        """Drop every entry due at `now` (the caller has just claimed what is due). Returns how many."""
        popped = 0
        while self._heap and self._heap[0][0] <= now:
            heapq.heappop(self._heap)
            popped += 1
        return popped

    def next_deadline(self) -> float | None:
        """When something is next due, as far as the window knows; None if nothing is scheduled."""
        if self._heap:
            return self._heap[0][0]
        return None if math.isinf(self.horizon) else self.horizon

    @property
    def needs_refill(self) -> bool:
        """The window ran dry while the store holds later entries."""
        return not self._heap and not math.isinf(self.horizon)
