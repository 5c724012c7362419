#!/usr/bin/env bash
# Power scheduling in a throw-away data directory: a queue with its own concurrency, a fan-in of dependencies,
# a dead dependency that cancels its dependant and comes back with `dlq retry`, a unique job, and `wait`.
set -euo pipefail
export QUEUECTL_HOME="${QUEUECTL_HOME:-$(mktemp -d)/queuectl}"
work="$(mktemp -d)"
q() { queuectl "$@"; }

q config set max-retries 0
q queue add downloads --concurrency 2          # at most two downloads at once, whatever the worker count
for n in 1 2 3 4; do
  q enqueue --id "part$n" --queue downloads --tag demo -- "sleep 0.2; seq $n > $work/part$n"
done
q enqueue --id join --after part1,part2,part3,part4 -- "cat $work/part* | wc -l > $work/joined"
q enqueue --id check --after join -- "test -e $work/go"        # fails: $work/go does not exist yet
q enqueue --id report --after check -- "echo all done > $work/report"
q enqueue --unique-key nightly -- "true"
q enqueue --unique-key nightly --if-exists ignore -- "true"  # prints the same id: the first one is active

q run --workers 4 --until-idle
q list --tag demo
q inspect report | grep -E 'state|last_error'   # cancelled: it runs after check, which ended dead

touch "$work/go"
q dlq retry check                                # check runs again, and report comes back with it
q run --workers 4 --until-idle
q wait join check report
cat "$work/joined" "$work/report"
