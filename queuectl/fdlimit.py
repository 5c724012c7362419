"""Room in the open-files limit for every worker. A running job holds three files (its output pipe, its pidfd and,
once it prints, its log file), so `ulimit -n 1024`, a common default, runs out near 330 workers: commands then fail
to start with "Too many open files" and spend their attempts on the engine's shortage, not their own fault."""

from __future__ import annotations

import resource

from queuectl.errors import ValidationError

#: Files per worker: the three a running job holds, and one for its finish hook's output.
FILES_PER_WORKER = 4
#: The engine's own (13 when idle, measured): the database (3), the wake-up socket, epoll, the self-pipe, stdio,
#: /dev/null, and at times a spawn's pipes, webhooks' and the dashboard's sockets.
ENGINE_FILES = 32


def files_needed(workers: int) -> int:
    return ENGINE_FILES + FILES_PER_WORKER * workers


def ensure_room(workers: int) -> None:
    """Raise the soft limit (never past the hard one) if `workers` need more; refuse them if even that is short."""
    need = files_needed(workers)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    reachable = hard  # what fewer workers would get: the soft limit is raised as far as they need
    if hard == resource.RLIM_INFINITY or hard >= need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
            return
        except (ValueError, OSError):
            reachable = soft  # refused (a container's policy): the limit stays as it is
    most = (reachable - ENGINE_FILES) // FILES_PER_WORKER
    advice = (f"raise the limit, or run at most {most} worker{'s' if most > 1 else ''}" if most >= 1 else
              f"raise the limit to at least {files_needed(1)}, what one worker needs")
    raise ValidationError(
        f"--workers {workers} needs about {need} open files, but this process may open {soft} (ulimit -n; hard "
        f"limit {'unlimited' if hard == resource.RLIM_INFINITY else hard}): {advice}")
