#!/usr/bin/env bash
# demo.sh: bring the lab up and show ferry's main job: a running, memory-dirtying
# guest live-migrated host1 -> host2 and back, with its heartbeat continuing; then host1
# drained for maintenance, its guests spread over host2 and host3.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export FERRY_LAB_ROOT=${FERRY_LAB_ROOT:-/var/lib/ferry-lab}
export FERRY_CONFIG=$FERRY_LAB_ROOT/ferry.yaml
export FERRY_STATE=${FERRY_STATE:-$FERRY_LAB_ROOT/ferry.db}
FERRY=$REPO/bin/ferry
VM=demo-web

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

if [ -z "${FERRY_DEMO_IN_LAB:-}" ]; then
  [ -x "$FERRY" ] || (cd "$REPO" && go build -o bin/ferry ./cmd/ferry)
  step "lab: three libvirt hosts, each in its own network namespace, joined by emulated links"
  bash "$HERE/lab-up.sh" 3
  # the hosts are reached from the lab's client namespace (hack/lab-exec.sh; with FERRY_LAB_LINKS=
  # the lab is on loopback and this runs right here)
  FERRY_DEMO_IN_LAB=1 exec bash "$HERE/lab-exec.sh" bash "$HERE/demo.sh"
fi

step "a guest on host1: 256 MiB, dirtying a 64 MiB working set at 5000 pages/s"
bash "$HERE/lab-guest.sh" undefine "$VM" >/dev/null 2>&1 || true
bash "$HERE/lab-guest.sh" define "$VM" --host 1 --mem 256 --wss 64 --rate 5000 --start
beat0=$(bash "$HERE/lab-guest.sh" log "$VM" --wait 60)
echo "heartbeat n=$beat0"
run "$FERRY" hosts
run "$FERRY" vms

step "live migration host1 -> host2"
run "$FERRY" migrate "$VM" --to host2
sleep 1
beat1=$(bash "$HERE/lab-guest.sh" log "$VM")
echo "heartbeat n=$beat1 (was $beat0): the guest kept running through the move"

step "and back host2 -> host1"
run "$FERRY" migrate "$VM" --to host1
sleep 1
beat2=$(bash "$HERE/lab-guest.sh" log "$VM")
echo "heartbeat n=$beat2: still counting, no corruption in its console"
[ "$beat2" -gt "$beat1" ] && [ "$beat1" -gt "$beat0" ] || { echo "heartbeat did not advance" >&2; exit 1; }

step "the journal"
run "$FERRY" history --vm "$VM" --limit 2
id=$("$FERRY" history --vm "$VM" --limit 1 -o json | sed -n 's/.*"id": "\([^"]*\)".*/\1/p' | head -1)
run "$FERRY" show "$id"

step "a refused request changes nothing"
run "$FERRY" migrate "$VM" --to host1 || echo "(exit $?: refused, as it should be)"

step "maintenance: drain host1 (two more guests there, one of them stopped)"
for g in demo-db:160 demo-cache:96; do
  bash "$HERE/lab-guest.sh" undefine "${g%%:*}" >/dev/null 2>&1 || true
done
bash "$HERE/lab-guest.sh" define demo-db --host 1 --mem 160 --start >/dev/null
bash "$HERE/lab-guest.sh" define demo-cache --host 1 --mem 96 >/dev/null
run "$FERRY" drain host1 --dry-run
run "$FERRY" drain host1
run "$FERRY" hosts
beat3=$(bash "$HERE/lab-guest.sh" log "$VM")
echo "heartbeat n=$beat3: $VM kept running through the drain"
run "$FERRY" undrain host1

for g in "$VM" demo-db demo-cache; do bash "$HERE/lab-guest.sh" undefine "$g" >/dev/null; done
printf '\nThe lab is still up (FERRY_CONFIG=%s; `hack/lab-exec.sh bin/ferry hosts` reaches it); `make lab-down` stops it.\n' "$FERRY_CONFIG"
