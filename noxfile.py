"""Sessions: tests (with the torture suite beside it), lint, typecheck, e2e (the defaults, and what CI runs);
torture alone; bench."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "e2e"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
PYTEST = ["pytest", "-q", "-p", "no:cacheprovider"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite, on real SQLite files, real processes and (where reachable) a real PostgreSQL, with
    the torture suite running beside it in a second pytest process: each leaves a core idle half of the time
    (they wait on processes, signals and deadlines), so together they take ~60% of one after the other. With
    arguments (`nox -s tests -- -k name`), only the main suite runs, with them."""
    session.install("-e", ".[test,postgres]")
    main = [*PYTEST, "--ignore=tests/torture", "--ignore=tests/e2e"]
    if session.posargs:
        session.run(*main, *session.posargs)
        return
    with tempfile.TemporaryDirectory(prefix="queuectl-torture-") as tmp, \
            open(os.path.join(tmp, "output.txt"), "w+b") as out:
        bin_dir = session.bin  # the session's virtualenv: its pytest, with queuectl installed
        torture = subprocess.Popen(
            [os.path.join(bin_dir, PYTEST[0]), *PYTEST[1:], f"--basetemp={tmp}/base", "tests/torture"],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")})
        try:
            session.run(*main)
        finally:
            code = torture.wait()
            out.seek(0)
            session.log("torture suite (run beside the main suite):")
            sys.stdout.flush()
            sys.stdout.buffer.write(out.read())
            sys.stdout.flush()
        if code != 0:
            session.error(f"the torture suite failed (exit {code})")


@nox.session(python=PYTHON)
def torture(session: nox.Session) -> None:
    """Crash loops, load, storage faults, output floods, fuzzed input, alone (the tests session runs it too)."""
    session.install("-e", ".[test,postgres]")
    session.run(*PYTEST, "tests/torture", *session.posargs)


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
    session.run(*PYTEST, "tests/e2e", *session.posargs,
                env={"E2E_CHROMIUM": chromium})
