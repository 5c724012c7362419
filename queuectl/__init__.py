"""queuectl: a durable job queue for shell commands.

Public names are loaded on first use, so that `queuectl enqueue` (queuectl.fastpath) starts without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Attempt": "queuectl.models",
    "AttemptStatus": "queuectl.models",
    "Job": "queuectl.models",
    "JobState": "queuectl.models",
    "NewJob": "queuectl.jobspec",
    "Queue": "queuectl.api",
    "QueueCtlError": "queuectl.errors",
    "ValidationError": "queuectl.errors",
    "NotFoundError": "queuectl.errors",
    "ConflictError": "queuectl.errors",
    "StoreError": "queuectl.errors",
}

if TYPE_CHECKING:
    from queuectl.api import Queue
    from queuectl.errors import ConflictError, NotFoundError, QueueCtlError, StoreError, ValidationError
    from queuectl.jobspec import NewJob
    from queuectl.models import Attempt, AttemptStatus, Job, JobState


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'queuectl' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "Attempt",
    "AttemptStatus",
    "ConflictError",
    "Job",
    "JobState",
    "NewJob",
    "NotFoundError",
    "Queue",
    "QueueCtlError",
    "StoreError",
    "ValidationError",
    "__version__",
]
