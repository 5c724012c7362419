"""Settings (queuectl/config.py) and the retry policy (queuectl/retry.py): pure functions, no I/O."""

from __future__ import annotations

import random
from typing import Any

import pytest

from queuectl import config, retry
from queuectl.config import Settings
from queuectl.errors import ValidationError

# ---- keys -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["max-retries", "max_retries", "MAX_RETRIES", "Max-Retries", " max-retries "])
def test_key_aliases_reach_the_canonical_key(name: str) -> None:
    assert config.canonical_key(name).name == "max-retries"


@pytest.mark.parametrize(("alias", "canonical"), [("backoff_base", "backoff-base"), ("backoff_max", "backoff-max"),
                                                  ("job_timeout", "job-timeout"), ("kill_grace", "kill-grace")])
def test_every_key_takes_underscores(alias: str, canonical: str) -> None:
    assert config.canonical_key(alias).name == canonical


def test_the_issue_keys_exist_with_their_defaults() -> None:
    defaults = {name: key.default for name, key in config.KEYS.items()}
    assert defaults["max-retries"] == "3"
    assert defaults["backoff-base"] == "2"
    assert defaults["job-timeout"] == "none"
    assert defaults["kill-grace"] == "5s"
    assert "backoff-max" in defaults
    settings = config.resolve({}, environ={})
    assert (settings.max_retries, settings.backoff_base, settings.job_timeout_s, settings.kill_grace_s) == (
        3, 2.0, None, 5.0)
    assert settings == Settings()  # the documented defaults and the dataclass agree
    assert settings.backoff_max_s > 0


@pytest.mark.parametrize("name", ["nope", "", "max", "retries", "max--retries"])
def test_an_unknown_key_is_a_validation_error_listing_the_known_ones(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        config.canonical_key(name)
    assert "max-retries" in str(err.value) and "\n" not in str(err.value)


# ---- values -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "raw", "stored"), [
    ("max_retries", "5", "5"), ("max-retries", " 0 ", "0"), ("backoff-base", "1.5", "1.5"),
    ("backoff-max", "10m", "10m"), ("job-timeout", "30s", "30s"), ("job-timeout", "none", "none"),
    ("kill-grace", "2", "2"), ("retry-jitter", "0.25", "0.25"), ("claim-ahead-below", "250ms", "250ms"),
    ("claim_ahead_below", "0", "0"),
])
def test_valid_values_are_accepted_and_stored_trimmed(name: str, raw: str, stored: str) -> None:
    key, value = config.validate(name, raw)
    assert key.name == config.canonical_key(name).name
    assert value == stored


@pytest.mark.parametrize(("name", "raw"), [
    ("max-retries", "-1"), ("max-retries", "abc"), ("max-retries", "2.5"), ("max-retries", ""),
    ("backoff-base", "0.5"), ("backoff-base", "0"), ("backoff-base", "-2"), ("backoff-base", "nan"),
    ("backoff-base", "inf"), ("backoff-base", "two"), ("backoff-base", "1001"),
    ("backoff-max", "-5"), ("backoff-max", "soon"), ("backoff-max", ""),
    ("job-timeout", "-1"), ("job-timeout", "abc"),
    ("kill-grace", "-1s"), ("kill-grace", "never"),
    ("retry-jitter", "1.5"), ("retry-jitter", "-0.1"), ("retry-jitter", "x"),
    ("claim-ahead-below", "-1ms"), ("claim-ahead-below", "fast"), ("claim-ahead-below", "nan"),
])
def test_invalid_values_are_refused_naming_the_key(name: str, raw: str) -> None:
    with pytest.raises(ValidationError) as err:
        config.validate(name, raw)
    assert name in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("raw", ["none", "off", "0", "NONE"])
def test_job_timeout_none_means_no_limit(raw: str) -> None:
    assert config.resolve({"job-timeout": raw}, environ={}).job_timeout_s is None


def test_stored_values_override_defaults_and_environment_overrides_stored() -> None:
    stored = {"max-retries": "5", "backoff-max": "10m", "job-timeout": "30s", "kill-grace": "1s"}
    settings = config.resolve(stored, environ={})
    assert (settings.max_retries, settings.backoff_max_s, settings.job_timeout_s, settings.kill_grace_s) == (
        5, 600.0, 30.0, 1.0)
    env = {"QUEUECTL_MAX_RETRIES": "1", "QUEUECTL_BACKOFF_MAX": "2m", "QUEUECTL_JOB_TIMEOUT": "none",
           "QUEUECTL_BACKOFF_BASE": "3"}
    settings = config.resolve(stored, environ=env)
    assert (settings.max_retries, settings.backoff_max_s, settings.job_timeout_s, settings.backoff_base) == (
        1, 120.0, None, 3.0)


def test_an_invalid_environment_value_is_a_validation_error_naming_the_variable() -> None:
    with pytest.raises(ValidationError, match=r"^QUEUECTL_MAX_RETRIES: max-retries must be"):
        config.resolve({}, environ={"QUEUECTL_MAX_RETRIES": "lots"})


def test_a_stored_value_that_cannot_be_used_leaves_only_its_own_key_at_the_default() -> None:
    """Only something other than `config set` stores such a value (a hand-edited database). Before, it made an
    engine ignore every stored value."""
    stored = {"max-retries": "lots", "backoff-max": "10m", "kill-grace": "-1s"}
    settings = config.resolve(stored, environ={})
    assert (settings.max_retries, settings.backoff_max_s, settings.kill_grace_s) == (3, 600.0, 5.0)
    assert set(config.unusable(stored)) == {"max-retries", "kill-grace"}
    assert "max-retries must be a whole number" in config.unusable(stored)["max-retries"]
    assert config.in_force(stored, environ={})["max-retries"] == ("3", "default", False)
    assert config.in_force(stored, environ={"QUEUECTL_MAX_RETRIES": "1"})["max-retries"] == ("1", "env", False)
    assert config.in_force(stored, environ={"QUEUECTL_BACKOFF_MAX": "1m"})["backoff-max"] == ("1m", "env", True)


def test_a_stored_value_that_is_not_text_is_unusable_not_a_crash() -> None:
    """SQLite keeps a BLOB in a TEXT column: parsing it raised TypeError, and the engine could not start."""
    stored: dict[str, Any] = {"on-success": b"echo done", "log-max-bytes": 5, "max-retries": "2"}
    assert set(config.unusable(stored)) == {"on-success", "log-max-bytes"}
    settings = config.resolve(stored, environ={})
    assert (settings.on_success, settings.log_max_bytes, settings.max_retries) == ("", 100 << 20, 2)


# ---- backoff ------------------------------------------------------------------------------------------------------


def test_base_2_gives_2_4_8_seconds() -> None:
    s = Settings(backoff_base=2.0, backoff_max_s=3600.0)
    assert [retry.backoff_delay_s(n, s) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]


def test_base_3_gives_3_9_27_seconds() -> None:
    s = Settings(backoff_base=3.0, backoff_max_s=3600.0)
    assert [retry.backoff_delay_s(n, s) for n in (1, 2, 3)] == [3.0, 9.0, 27.0]


def test_backoff_max_caps_one_delay() -> None:
    s = Settings(backoff_base=2.0, backoff_max_s=5.0)
    assert [retry.backoff_delay_s(n, s) for n in (1, 2, 3, 10)] == [2.0, 4.0, 5.0, 5.0]


def test_a_huge_exponent_is_capped_not_an_overflow() -> None:
    s = Settings(backoff_base=1000.0, backoff_max_s=60.0)
    assert retry.backoff_delay_s(1000, s) == 60.0


def test_jitter_adds_at_most_its_fraction_and_is_off_by_default() -> None:
    s = Settings(backoff_base=2.0, retry_jitter=0.5)
    rng = random.Random(7)
    delays = [retry.backoff_delay_s(3, s, rng) for _ in range(200)]
    assert all(8.0 <= d <= 12.0 for d in delays)
    assert len(set(delays)) > 100  # really random
    assert retry.backoff_delay_s(3, Settings(), random.Random(7)) == 8.0


# ---- retry or dead ------------------------------------------------------------------------------------------------


def test_max_retries_counts_retries_after_the_first_attempt() -> None:
    s = Settings(max_retries=3)
    decisions = [retry.decide(n, None, s) for n in (1, 2, 3, 4)]
    assert [d.dead for d in decisions] == [False, False, False, True]
    assert [d.delay_s for d in decisions[:3]] == [2.0, 4.0, 8.0]
    assert decisions[3].delay_s is None


@pytest.mark.parametrize("max_retries", [0, 1, 3, 7])
def test_a_job_that_always_fails_runs_max_retries_plus_one_times(max_retries: int) -> None:
    s = Settings(max_retries=99)
    runs = 0
    while True:
        runs += 1
        if retry.decide(runs, max_retries, s).dead:
            break
    assert runs == max_retries + 1


def test_the_job_own_max_retries_wins_over_the_setting_and_none_means_the_setting() -> None:
    s = Settings(max_retries=1)
    assert retry.decide(2, None, s).dead
    assert not retry.decide(2, 5, s).dead
    assert retry.decide(1, 0, Settings(max_retries=10)).dead
