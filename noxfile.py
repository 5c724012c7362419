"""Sessions: tests, lint, typecheck, torture (the defaults, and what CI runs), bench."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "torture"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite, on real SQLite files, real processes and (where reachable) a real PostgreSQL."""
    session.install("-e", ".[test,postgres]")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "--ignore=tests/torture", *session.posargs)


@nox.session(python=PYTHON)
def torture(session: nox.Session) -> None:
    """Crash loops, load, storage faults, output floods, fuzzed input: slower, each scenario bounded in time."""
    session.install("-e", ".[test,postgres]")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/torture", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "queuectl", "tests", "benchmarks", "noxfile.py", "examples")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test,postgres]", "mypy")
    session.run("mypy", "queuectl")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks: ratios against baselines measured in the same run. Results in benchmarks/results/."""
    session.install(".[postgres]")  # not editable: start-up is measured as users get it
    session.run("python", "-m", "benchmarks", *session.posargs)
