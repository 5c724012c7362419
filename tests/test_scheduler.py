"""DueHeap: the engine's bounded window of the soonest due jobs. Pure data structure, no I/O."""

from __future__ import annotations

import math
import random

from queuectl.scheduler import DueHeap


def entries(*times: float) -> list[tuple[float, str]]:
    return [(t, f"job-{t:g}") for t in times]


def test_empty_heap_has_no_deadline_and_needs_no_refill() -> None:
    heap = DueHeap(4)
    assert len(heap) == 0
    assert heap.next_deadline() is None
    assert math.isinf(heap.horizon)
    assert not heap.needs_refill
    assert heap.pop_due(1e12) == 0


def test_rebuild_with_fewer_than_capacity_covers_everything() -> None:
    heap = DueHeap(4)
    heap.rebuild(entries(10, 20, 30))
    assert len(heap) == 3
    assert math.isinf(heap.horizon)  # the store holds nothing beyond these
    assert heap.next_deadline() == 10


def test_rebuild_at_capacity_sets_the_horizon_to_the_last_entry() -> None:
    heap = DueHeap(3)
    heap.rebuild(entries(10, 20, 30))
    assert heap.horizon == 30
    assert heap.next_deadline() == 10


def test_rebuild_replaces_the_previous_window() -> None:
    heap = DueHeap(2)
    heap.rebuild(entries(1, 2))
    heap.rebuild(entries(50))
    assert len(heap) == 1
    assert heap.next_deadline() == 50
    assert math.isinf(heap.horizon)
    heap.rebuild([])
    assert len(heap) == 0
    assert heap.next_deadline() is None
    assert math.isinf(heap.horizon)


def test_rebuild_accepts_unsorted_input_and_keeps_the_minimum_first() -> None:
    heap = DueHeap(10)
    heap.rebuild(entries(30, 10, 20))
    assert heap.next_deadline() == 10


def test_push_within_the_horizon_is_kept_and_can_become_the_next_deadline() -> None:
    heap = DueHeap(3)
    heap.rebuild(entries(10, 20, 30))
    heap.push(5, "retry")
    assert len(heap) == 4
    assert heap.next_deadline() == 5


def test_push_beyond_the_horizon_is_left_for_a_refill() -> None:
    heap = DueHeap(3)
    heap.rebuild(entries(10, 20, 30))
    heap.push(31, "later")
    assert len(heap) == 3
    assert heap.next_deadline() == 10


def test_push_with_an_infinite_horizon_is_always_kept() -> None:
    heap = DueHeap(3)
    heap.push(1e9, "far")
    assert len(heap) == 1
    assert heap.next_deadline() == 1e9


def test_push_past_twice_the_capacity_trims_to_the_soonest_and_lowers_the_horizon() -> None:
    heap = DueHeap(4)
    times = list(range(100, 91, -1))  # 9 pushes, soonest last
    for t in times:
        heap.push(float(t), f"j{t}")
    # after the 9th push (> 2 * 4) the window keeps the 4 soonest: 92..95
    assert len(heap) == 4
    assert heap.horizon == 95
    assert heap.next_deadline() == 92
    heap.push(96, "beyond")  # now beyond the horizon
    assert len(heap) == 4


def test_pop_due_drops_exactly_the_entries_due_and_counts_them() -> None:
    heap = DueHeap(10)
    heap.rebuild(entries(1, 2, 3, 4, 5))
    assert heap.pop_due(0.5) == 0
    assert heap.pop_due(3) == 3  # due at exactly `now` counts as due
    assert len(heap) == 2
    assert heap.next_deadline() == 4
    assert heap.pop_due(100) == 2
    assert len(heap) == 0


def test_equal_due_times_are_all_popped_together() -> None:
    heap = DueHeap(10)
    heap.rebuild([(7.0, "b"), (7.0, "a"), (7.0, "c"), (8.0, "d")])
    assert heap.pop_due(7.0) == 3
    assert heap.next_deadline() == 8.0


def test_window_running_dry_needs_a_refill_and_reports_the_horizon_as_deadline() -> None:
    heap = DueHeap(2)
    heap.rebuild(entries(10, 20))  # at capacity: the store may hold more after 20
    assert not heap.needs_refill
    heap.pop_due(25)
    assert len(heap) == 0
    assert heap.needs_refill
    # with nothing in the window, the engine should look again at the horizon at the latest
    assert heap.next_deadline() == 20
    heap.rebuild(entries(30))
    assert not heap.needs_refill
    assert heap.next_deadline() == 30


def test_a_window_that_covers_everything_never_needs_a_refill() -> None:
    heap = DueHeap(5)
    heap.rebuild(entries(1, 2))
    heap.pop_due(10)
    assert not heap.needs_refill
    assert heap.next_deadline() is None


def test_memory_stays_bounded_by_the_capacity_under_many_pushes() -> None:
    heap = DueHeap(16)
    rng = random.Random(3)
    for n in range(10_000):
        heap.push(rng.uniform(0, 1e6), f"j{n}")
        assert len(heap) <= 2 * 16


def test_random_operations_agree_with_a_sorted_list_model() -> None:
    """Whatever the window keeps, it keeps the soonest entries, and pop_due counts what is due among them."""
    rng = random.Random(7)
    for _ in range(200):
        capacity = rng.randint(1, 8)
        heap = DueHeap(capacity)
        store = sorted((rng.uniform(0, 100), f"s{n}") for n in range(rng.randint(0, 20)))
        heap.rebuild(store[:capacity])
        model = list(store[:capacity])
        horizon = store[capacity - 1][0] if len(store) >= capacity else math.inf
        assert heap.horizon == horizon
        now = 0.0
        for step in range(30):
            if rng.random() < 0.5:
                t = rng.uniform(now, now + 100)
                heap.push(t, f"p{step}")
                if t <= horizon:
                    model.append((t, f"p{step}"))
                    model.sort()
                    if len(model) > 2 * capacity:
                        model = model[:capacity]
                        horizon = model[-1][0]
            else:
                now += rng.uniform(0, 30)
                due = [e for e in model if e[0] <= now]
                assert heap.pop_due(now) == len(due)
                model = [e for e in model if e[0] > now]
            assert len(heap) == len(model)
            assert heap.horizon == horizon
            expected = model[0][0] if model else (None if math.isinf(horizon) else horizon)
            assert heap.next_deadline() == expected
