"""Sessions: tests, lint, typecheck, torture, e2e (the defaults, and what CI runs), bench."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "torture", "e2e"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite, on real SQLite files, real processes and (where reachable) a real PostgreSQL."""
    session.install("-e", ".[test,postgres]")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "--ignore=tests/torture", "--ignore=tests/e2e",
                *session.posargs)


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
    session.install(".[postgres,dashboard]")  # not editable: start-up is measured as users get it
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHON)
def e2e(session: nox.Session) -> None:
    """The dashboard in a real browser: Debian's chromium, driven by Playwright for Python through its
    executable_path (never `playwright install`, which downloads a browser). Installs chromium with apt when
    /usr/bin/chromium is missing. Saves docs/dashboard.png and docs/top.png."""
    import os
    import shutil

    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        if sudo and shutil.which("sudo") is None:
            session.error("chromium is missing and this user cannot install it: apt-get install chromium as root")
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        session.run(*sudo, "apt-get", "update", "-qq", external=True, env=env)
        session.run(*sudo, "apt-get", "install", "-y", "-qq", "chromium", external=True, env=env)
    session.install("-e", ".[test]", "playwright")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/e2e", *session.posargs,
                env={"E2E_CHROMIUM": chromium})
