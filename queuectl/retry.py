"""Retry policy: pure functions of the attempt count, the outcome and the settings."""

from __future__ import annotations

import dataclasses
import random

from queuectl.config import Settings


@dataclasses.dataclass(frozen=True)
class RetryDecision:
    #: None means the job is dead (retries spent).
    delay_s: float | None

    @property
    def dead(self) -> bool:
        return self.delay_s is None


def backoff_delay_s(attempts: int, settings: Settings, rng: random.Random | None = None) -> float:
    """min(base ^ attempts, backoff_max), plus up to retry_jitter of it at random.

    attempts is the number of counted attempts so far (1 after the first failure), so base 2 gives 2, 4, 8 s.
    """
    try:
        delay = min(settings.backoff_base**attempts, settings.backoff_max_s)
    except OverflowError:
        delay = settings.backoff_max_s
    if settings.retry_jitter:
        delay += delay * settings.retry_jitter * (rng or random).random()
    return delay


def decide(attempts: int, max_retries: int | None, settings: Settings) -> RetryDecision:
    """After a failed attempt that brought the counted attempts to `attempts`: retry after a delay, or dead.

    max_retries counts retries after the first attempt, so a job runs at most max_retries + 1 times.
    """
    allowed = settings.max_retries if max_retries is None else max_retries
    if attempts > allowed:
        return RetryDecision(None)
    return RetryDecision(backoff_delay_s(attempts, settings))
