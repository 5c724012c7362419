"""Telling the world a job ended: finish hooks (config on-success / on-failure / on-dead) and webhooks.

The engine reports every end here after it is recorded; nothing here blocks a worker. Hooks run as their own
tasks (at most HOOK_SLOTS at once, the rest wait their turn), webhooks go through WebhookSender's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

from queuectl import hooks, paths, webhooks
from queuectl.config import Settings
from queuectl.events import EventLog
from queuectl.models import Job, Outcome, Webhook
from queuectl.timefmt import iso

#: Hooks running at once; more wait, so that a storm of failures cannot fork-bomb the machine.
HOOK_SLOTS = 4
HOOK_TIMEOUT_S = 60.0
#: Webhook event -> the hook setting run for it (failed and timed_out retry: both are "failure").
_HOOK_OF = {"completed": "on_success", "failed": "on_failure", "timed_out": "on_failure", "dead": "on_dead"}
_HOOK_EVENT = {"completed": "success", "failed": "failure", "timed_out": "failure", "dead": "dead",
               "cancelled": "cancelled"}


class Notifier:
    def __init__(self, home: Path, log: EventLog) -> None:
        self.home = home
        self.log = log
        self.sender = webhooks.WebhookSender(log=self._log_webhook)
        self._settings = Settings()
        self._webhooks: list[Webhook] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(HOOK_SLOTS)

    def configure(self, settings: Settings, hooks_: list[Webhook]) -> None:
        self._settings = settings
        self._webhooks = hooks_

    @property
    def active(self) -> bool:
        s = self._settings
        return bool(self._webhooks or s.on_success or s.on_failure or s.on_dead)

    def job_ended(self, event: str, job: Job, attempt: int, outcome: Outcome | None, state: str) -> None:
        """event: completed, failed, timed_out (both retrying), dead or cancelled. Costs nothing without hooks or
        webhooks: every job's end passes here."""
        if not self.active:
            return
        setting = _HOOK_OF.get(event)  # cancelled has no hook of its own
        template: str = getattr(self._settings, setting) if setting else ""
        if template:
            task = asyncio.create_task(self._run_hook(template, event, job, attempt, outcome, state),
                                       name=f"hook-{job.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        payload: dict[str, Any] | None = None
        for hook in self._webhooks:
            if event in hook.events:
                payload = payload or _payload(job, attempt, outcome, state)
                self.sender.submit(hook.url, hook.secret, event, payload)

    async def _run_hook(self, template: str, event: str, job: Job, attempt: int, outcome: Outcome | None,
                        state: str) -> None:
        env = hooks.hook_env(job_id=job.id, event=_HOOK_EVENT[event], state=state, attempt=attempt,
                             exit_code=outcome.exit_code if outcome else None,
                             error=outcome.error if outcome else job.last_error, command=job.command, queue=job.queue,
                             log_path=outcome.log_path if outcome else None)
        if outcome is not None and outcome.log_path:
            _ensure_exists(Path(outcome.log_path))  # a command that printed nothing has no log file; the hook gets one
        setting = _HOOK_OF[event].replace("_", "-")
        log_path = paths.hook_log_path(self.home, job.id, attempt, setting)
        async with self._slots:
            result = await hooks.run_hook(template, env, log_path=log_path, timeout_s=HOOK_TIMEOUT_S, cwd=job.cwd)
        if not result.succeeded:
            where = f" (output in {log_path})" if result.output_tail else " (it printed nothing)"
            self.log.emit("hook_failed", f"{job.id}: {setting} hook {result.error}{where}",
                          job=job.id, hook=setting, error=result.error, log=str(log_path))

    def _log_webhook(self, event: str, message: str, fields: dict[str, object]) -> None:
        self.log.emit(event, message, **fields)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Give running hooks and pending webhooks up to timeout_s, then drop what is left."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                if self._tasks:
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)
                await self.sender.drain(timeout_s)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _payload(job: Job, attempt: int, outcome: Outcome | None, state: str) -> dict[str, Any]:
    return {"job": {
        "id": job.id, "command": job.command, "queue": job.queue, "tags": list(job.tags), "state": state,
        "attempt": attempt, "exit_code": outcome.exit_code if outcome else None,
        "error": outcome.error if outcome else job.last_error,
        "started_at": iso(outcome.started_at) if outcome else None,
        "finished_at": iso(outcome.finished_at) if outcome else None,
    }}


def _ensure_exists(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600))
