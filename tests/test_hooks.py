"""Finish hooks with real shells: what the shell saw for every placeholder, in bare, "double" and 'single' quoted
positions, hostile values arriving byte-exact and never run; the template checks; run_hook's failures."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queuectl.errors import ValidationError
from queuectl.hooks import MAX_VALUE_BYTES, PLACEHOLDER_HELP, PLACEHOLDERS, hook_env, render, run_hook, validate

HOSTILE = [
    'say "hi"; touch pwned',
    "it's; touch pwned; echo '",
    "$(touch pwned)",
    "`touch pwned`",
    "'$(touch pwned)'",
    '"$(touch pwned)"',
    "x; rm -rf pwned-dir",
    "line one\nline two\n$(touch pwned)\n",
    "  leading and trailing  * ? [a] ~ ",
    "back\\slash \\\" \\' \\$HOME ${HOME} $HOME {id} {{ }} %s %n",
    "-n",
    "",
]

#: Each position a placeholder may take in a template; printf '%s' writes its argument as it arrived.
POSITIONS = {
    "bare": "printf '%s' {error} > out",
    "double": "printf '%s' \"[{error}]\" > out",
    "single": "printf '%s' '[{error}]' > out",
    "escaped-quote-in-double": "printf '%s' \"\\\"{error}\\\"\" > out",
}
EXPECTED = {"bare": "{}", "double": "[{}]", "single": "[{}]", "escaped-quote-in-double": '"{}"'}


def env_for(*, job_id: str = "job-1", error: str | None = "exit code 3", exit_code: int | None = 3,
            log_path: str | None = "/tmp/job-1.log") -> dict[str, str]:
    return hook_env(job_id=job_id, event="failure", state="failed", attempt=2, exit_code=exit_code, error=error,
                    command="make test", queue="default", log_path=log_path)


async def run_in(tmp_path: Path, template: str, env: dict[str, str], *, timeout_s: float = 30.0) -> str:
    outcome = await run_hook(template, env, log_path=tmp_path / "hook.log", cwd=str(tmp_path), timeout_s=timeout_s)
    assert outcome.succeeded, (outcome, (tmp_path / "hook.log").read_text())
    return (tmp_path / "out").read_bytes().decode()


def assert_nothing_ran(tmp_path: Path) -> None:
    assert not (tmp_path / "pwned").exists()
    # nothing but what the template writes (and the hook's log, made only if the hook printed something)
    assert {p.name for p in tmp_path.iterdir()} - {"hook.log"} == {"out"}


# ---- what the shell sees ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("value", HOSTILE)
async def test_hostile_value_arrives_byte_exact_and_never_runs(tmp_path: Path, position: str, value: str) -> None:
    (tmp_path / "pwned-dir").mkdir()
    seen = await run_in(tmp_path, POSITIONS[position], env_for(error=value))
    assert seen == EXPECTED[position].replace("{}", value)
    (tmp_path / "pwned-dir").rmdir()  # still there: `rm -rf pwned-dir` did not run either
    assert_nothing_ran(tmp_path)


async def test_the_usual_notify_template(tmp_path: Path) -> None:
    job_id = 'evil"; touch pwned; echo "'
    seen = await run_in(tmp_path, 'printf "queuectl: {id} failed" > out', env_for(job_id=job_id))
    assert seen == f"queuectl: {job_id} failed"
    assert_nothing_ran(tmp_path)


async def test_every_placeholder_reaches_the_shell(tmp_path: Path) -> None:
    template = "printf '%s|' " + " ".join("{" + name + "}" for name in PLACEHOLDERS) + " > out"
    seen = await run_in(tmp_path, template, env_for())
    assert seen == "job-1|failure|failed|2|3|exit code 3|make test|default|/tmp/job-1.log|"


async def test_missing_values_are_empty(tmp_path: Path) -> None:
    seen = await run_in(tmp_path, "printf '%s|' {exit_code} {error} {log} > out",
                        env_for(exit_code=None, error=None, log_path=None))
    assert seen == "|||"


async def test_the_same_placeholder_in_every_position_at_once(tmp_path: Path) -> None:
    seen = await run_in(tmp_path, "printf '%s|' {id} \"{id}\" '{id}' x{id}y \"a'{id}'b\" 'a\"{id}\"b' > out",
                        env_for(job_id="$(touch pwned) 'q' \"d\""))
    v = "$(touch pwned) 'q' \"d\""
    assert seen == f"{v}|{v}|{v}|x{v}y|a'{v}'b|a\"{v}\"b|"
    assert_nothing_ran(tmp_path)


async def test_doubled_braces_are_literal_and_other_braces_untouched(tmp_path: Path) -> None:
    seen = await run_in(tmp_path, "printf '%s|' {{id}} \"{{x}}\" '{{{id}}}' '{print $1}' > out", env_for())
    assert seen == "{id}|{x}|{job-1}|{print $1}|"


async def test_a_quote_in_a_comment_opens_nothing(tmp_path: Path) -> None:
    seen = await run_in(tmp_path, "true # don't {id}\nprintf '%s' {id} > out", env_for(job_id="a  b"))
    assert seen == "a  b"


async def test_the_base_environment_is_passed_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_TEST_BASE", "from the engine")
    seen = await run_in(tmp_path, 'printf "%s/%s" "$HOOK_TEST_BASE" {queue} > out', env_for())
    assert seen == "from the engine/default"


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(value=st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=40))
def test_render_keeps_any_value_data(tmp_path_factory: pytest.TempPathFactory, value: str) -> None:
    where = tmp_path_factory.mktemp("h")
    script = render("printf '%s|' {id} \"<{id}>\" '<{id}>' > out")
    subprocess.run(["/bin/sh", "-c", script], cwd=where, env=env_for(job_id=value), check=True, timeout=10)
    assert (where / "out").read_bytes().decode() == f"{value}|<{value}>|<{value}>|"
    assert [p.name for p in where.iterdir()] == ["out"]


# ---- the template -------------------------------------------------------------------------------------------------


def test_unknown_placeholder_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValidationError) as info:
        validate('notify-send "{id} {foo}"')
    message = str(info.value)
    assert "{foo}" in message
    assert all("{" + name + "}" in message for name in PLACEHOLDERS)
    assert "\n" not in message


def test_validate_strips_and_empty_means_no_hook() -> None:
    assert validate("  echo {id}\n") == "echo {id}"
    assert validate("") == ""
    assert validate(" \n ") == ""
    with pytest.raises(ValidationError):
        validate("echo \0")


def test_rendered_text_never_holds_a_value() -> None:
    assert render('notify-send "queuectl: {id} failed"') == 'notify-send "queuectl: ${QUEUECTL_HOOK_JOB_ID} failed"'
    assert render("echo {id}") == 'echo "${QUEUECTL_HOOK_JOB_ID}"'
    assert render("echo '{id}'") == "echo ''\"${QUEUECTL_HOOK_JOB_ID}\"''"
    assert render(r"echo \{id}") == r"echo \{id}"  # an escaped brace is the user's, not a placeholder


def test_every_placeholder_is_documented() -> None:
    assert PLACEHOLDERS.keys() == PLACEHOLDER_HELP.keys()
    assert all(var.startswith("QUEUECTL_HOOK_") for var in PLACEHOLDERS.values())


# ---- the environment ----------------------------------------------------------------------------------------------


def test_values_lose_nul_bytes_and_are_capped_on_a_character_boundary() -> None:
    env = hook_env(job_id="a\0b", event="dead", state="dead", attempt=5, exit_code=-9, error="é" * MAX_VALUE_BYTES,
                   command="x", queue="q", log_path=None)
    assert env["QUEUECTL_HOOK_JOB_ID"] == "ab"
    assert env["QUEUECTL_HOOK_EXIT_CODE"] == "-9"
    error = env["QUEUECTL_HOOK_ERROR"].encode()
    assert len(error) == MAX_VALUE_BYTES
    assert error.decode() == "é" * (MAX_VALUE_BYTES // 2)


async def test_a_huge_value_still_starts_the_hook(tmp_path: Path) -> None:
    env = env_for(error="x" * 10 * MAX_VALUE_BYTES)
    assert len(await run_in(tmp_path, "printf '%s' {error} > out", env)) == MAX_VALUE_BYTES


# ---- run_hook's own failures --------------------------------------------------------------------------------------


async def test_a_failing_hook_is_an_outcome_not_an_exception(tmp_path: Path) -> None:
    outcome = await run_hook("echo about to fail; exit 3", env_for(), log_path=tmp_path / "hook.log")
    assert outcome.exit_code == 3
    assert outcome.error == "exit code 3"
    assert "about to fail" in (tmp_path / "hook.log").read_text()


async def test_a_hanging_hook_is_timed_out(tmp_path: Path) -> None:
    started = time.monotonic()
    outcome = await run_hook("sleep 30", env_for(), log_path=tmp_path / "hook.log", timeout_s=0.3)
    assert outcome.timed_out
    assert time.monotonic() - started < 10


async def test_a_bad_template_is_reported_not_raised(tmp_path: Path) -> None:
    outcome = await run_hook("echo {nope}", env_for(), log_path=tmp_path / "logs" / "hook.log")
    assert outcome.exit_code is None
    assert outcome.error is not None
    assert "{nope}" in outcome.error
    assert "{nope}" in (tmp_path / "logs" / "hook.log").read_text()
