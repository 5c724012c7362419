"""queuectl: a durable job queue for shell commands."""

from __future__ import annotations

from queuectl.errors import ConflictError, NotFoundError, QueueCtlError, StoreError, ValidationError
from queuectl.models import Attempt, AttemptStatus, Job, JobState, NewJob

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "AttemptStatus",
    "ConflictError",
    "Job",
    "JobState",
    "NewJob",
    "NotFoundError",
    "QueueCtlError",
    "StoreError",
    "ValidationError",
    "__version__",
]
