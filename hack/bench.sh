#!/usr/bin/env bash
# bench.sh: `make bench`. Brings the lab up, runs the lab benchmarks, then the
# Go benchmarks, each printing ferry's figures beside a baseline from the same run.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
bash "$HERE/lab-up.sh" "${FERRY_LAB_HOSTS:-2}"
bash "$HERE/bench-live.sh"
cd "$REPO" && go test -run '^$' -bench . -benchmem ./...
