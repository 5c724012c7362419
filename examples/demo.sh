#!/usr/bin/env bash
# A tour of queuectl in a throw-away data directory: enqueue, run until idle, look, retry from the DLQ.
set -euo pipefail
export QUEUECTL_HOME="${QUEUECTL_HOME:-$(mktemp -d)/queuectl}"
here="$(cd "$(dirname "$0")" && pwd)"
q() { queuectl "$@"; }

q config set backoff-base 1.2              # quick retries for the demo (1.2 s, 1.44 s, ...)
q config set max-retries 1
q enqueue --file "$here/jobs.jsonl"        # hello, slow, flaky, later (in 30 s), too-slow (times out)
q enqueue '{"id":"broken","command":"exit 3"}'
q enqueue --priority 9 -- echo "urgent first"

q run --workers 2 --until-idle             # returns once nothing runs, nothing is due, no retry is pending
q status
q list --state dead
q inspect broken
q logs hello

q dlq retry broken                          # back to pending with its attempts reset
q run --until-idle
q list --json | python3 -c 'import json, sys; print({j["id"]: j["state"] for j in json.load(sys.stdin)})'
