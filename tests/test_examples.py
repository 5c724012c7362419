"""The examples the README points to still work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_script_runs_to_the_end_and_leaves_the_expected_states(home: Path) -> None:
    env = {**os.environ, "QUEUECTL_HOME": str(home), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(ROOT / "examples" / "demo.sh")], env=env, capture_output=True, text=True,
                          timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    states = json.loads(subprocess.run([sys.executable, "-m", "queuectl", "list", "--json"], env=env,
                                       capture_output=True, text=True, check=True).stdout)
    by_id = {j["id"]: j["state"] for j in states}
    assert by_id["hello"] == by_id["slow"] == by_id["flaky"] == "completed"
    assert by_id["too-slow"] == by_id["broken"] == "dead"  # broken: retried from the DLQ, failed again
    assert by_id["later"] == "pending"  # delayed by 30 s: --until-idle does not wait for it
    assert "Hello World" in done.stdout


def test_pipeline_script_shows_queues_dependencies_and_dlq_revival(home: Path) -> None:
    env = {**os.environ, "QUEUECTL_HOME": str(home), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(ROOT / "examples" / "pipeline.sh")], env=env, capture_output=True,
                          text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    out = done.stdout.splitlines()
    assert out[-5:] == ["join completed", "check completed", "report completed", "10", "all done"]
    assert "not run: it runs after check, which ended dead" in done.stdout
    first, second = (line for line in out if len(line) == 12 and line.isalnum())
    assert first == second  # the unique key returned the active job
