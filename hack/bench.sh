#!/usr/bin/env bash
# bench.sh: `make bench`. Brings the lab up with emulated links (FERRY_LAB_LINKS=netns unless
# set otherwise; FERRY_LAB_ROOT / FERRY_LAB_NET pick the lab, as for hack/lab-up.sh; default
# /var/lib/ferry-lab), then, in the lab's client namespace (hack/lab-exec.sh), runs the
# live-migration scenarios of hack/bench-precopy.sh (ferry and virsh migrate on the same
# guests, BENCH_REPS rounds, the over-bandwidth scenario on a shaped link, TLS on and off,
# 5 and 50 ms of delay; table + ./bench-results.json), the cold row of hack/bench-cold.sh,
# the drain row of hack/bench-drain.sh, then the Go benchmarks, and prints the total time.
# The lab stays up (make lab-down).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export PATH=$PATH:/usr/local/go/bin
export FERRY_LAB_LINKS=${FERRY_LAB_LINKS-netns}
start=$SECONDS
bash "$HERE/lab-up.sh" "${FERRY_LAB_HOSTS:-3}"
in_lab() { bash "$HERE/lab-exec.sh" "$@"; }
in_lab bash "$HERE/bench-precopy.sh"
in_lab bash "$HERE/bench-cold.sh" # cold row: one sparse disk moved by ferry --cold vs virsh vol-download/vol-upload
in_lab bash "$HERE/bench-drain.sh" # drain row: 4 guests, ferry drain --parallel 1 / 2 vs a virsh migrate loop
(cd "$REPO" && go test -run '^$' -bench . -benchmem ./...)
t=$((SECONDS - start))
printf 'make bench: total %dm%02ds\n' $((t / 60)) $((t % 60))
