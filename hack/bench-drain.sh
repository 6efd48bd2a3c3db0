#!/usr/bin/env bash
# bench-drain.sh: the drain row of `make bench`. Four running guests (BENCH_DRAIN_MIB MiB
# each, default 256, 32 MiB working set rewritten at 2000 pages/s) on host1 are moved off
# it, BENCH_REPS rounds (default 3), three ways:
#
#   ferry-p1     ferry drain host1 --parallel 1 --max-per-target 1 (one move at a time)
#   ferry-p2     ferry drain host1 --parallel 2 --max-per-target 1 (host2 and host3 at once)
#   virsh-loop   a plain shell loop of virsh migrate --live --p2p --persistent
#                --undefinesource, one VM after the other, alternating host2 and host3 (what
#                a maintenance script does without ferry; Nova's one-at-a-time drain)
#
# Wall time of the whole drain; every guest is checked to run exactly once off host1
# afterwards. Prints a table of medians and writes JSON to BENCH_DRAIN_OUT (default
# ./bench-drain.json). Needs a lab of 3 hosts (hack/lab-up.sh 3), bin/ferry, jq.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
say() { printf '[bench-drain] %s\n' "$*" >&2; }
die() { printf '[bench-drain] ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lab-common.sh
. "$HERE/lab-common.sh"

export FERRY_LAB_ROOT=$ROOT
export FERRY_CONFIG=$ROOT/ferry-plain.yaml # virsh runs without --tls: so does ferry
FERRY=${FERRY_BIN:-$REPO/bin/ferry}
REPS=${BENCH_REPS:-3}
MIB=${BENCH_DRAIN_MIB:-256}
OUT=${BENCH_DRAIN_OUT:-$REPO/bench-drain.json}
for v in REPS MIB; do
  case "${!v}" in '' | *[!0-9]* | 0) die "$v must be a positive integer, got '${!v}'" ;; esac
done
command -v jq >/dev/null || die "jq is missing (hack/install-deps.sh installs it)"
[ -x "$FERRY" ] || die "$FERRY is missing; run make build"
[ "$(lab_hosts | wc -w)" -ge 3 ] || die "the drain bench needs 3 lab hosts: run hack/lab-up.sh 3"

WORK=$(mktemp -d /tmp/ferry-bench-drain.XXXXXX)
export FERRY_STATE=$WORK/ferry.db
VMS=(bdr-1 bdr-2 bdr-3 bdr-4)
guest() { bash "$HERE/lab-guest.sh" "$@"; }

cleanup() {
  local vm
  for vm in "${VMS[@]}"; do guest undefine "$vm" >/dev/null 2>&1 || true; done
  "$FERRY" undrain host1 >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# setup: fresh guests on host1, each beating.
setup() {
  local vm
  for vm in "${VMS[@]}"; do
    guest undefine "$vm" >/dev/null 2>&1 || true
    guest define "$vm" --host 1 --mem "$MIB" --wss 32 --rate 2000 --start >/dev/null 2>&1 || die "cannot start $vm"
  done
  for vm in "${VMS[@]}"; do guest log "$vm" --wait 60 >/dev/null || die "$vm does not beat"; done
  "$FERRY" undrain host1 >/dev/null
}

# check: every guest runs exactly once, not on host1.
check() {
  local vm n h
  for vm in "${VMS[@]}"; do
    n=0
    for h in 1 2 3; do
      if [ "$(vsh "$h" domstate "$vm" 2>/dev/null | head -1)" = running ]; then
        [ "$h" != 1 ] || die "$vm still runs on host1 after $1"
        n=$((n + 1))
      fi
    done
    [ "$n" = 1 ] || die "$vm runs on $n hosts after $1"
  done
}

run() {
  local how=$1 i=0 vm
  case "$how" in
    ferry-p1) "$FERRY" drain host1 --parallel 1 --max-per-target 1 -o json >"$WORK/$how.json" ;;
    ferry-p2) "$FERRY" drain host1 --parallel 2 --max-per-target 1 -o json >"$WORK/$how.json" ;;
    virsh-loop)
      for vm in "${VMS[@]}"; do
        local to=$((2 + i % 2))
        i=$((i + 1))
        virsh -q -c "$(host_uri 1)" migrate --live --p2p --persistent --undefinesource "$vm" "$(host_uri "$to")" "tcp://$(host_addr "$to")" >/dev/null
      done
      ;;
  esac
}

results=()
for r in $(seq 1 "$REPS"); do
  for how in ferry-p1 ferry-p2 virsh-loop; do
    setup
    t0=$(date +%s.%N)
    run "$how" || die "$how failed in round $r"
    t1=$(date +%s.%N)
    check "$how"
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    say "round $r: $how ${wall}s"
    results+=("{\"round\":$r,\"how\":\"$how\",\"wall_s\":$wall}")
  done
done

printf '%s\n' "${results[@]}" | jq -s --argjson mib "$MIB" '
  def median: sort | if length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
  {guests: 4, guest_mib: $mib, rounds: ., median_s: (group_by(.how) | map({key: .[0].how, value: (map(.wall_s) | median)}) | from_entries)}' >"$OUT"
jq -r '"drain of 4 running \(.guest_mib) MiB guests off host1 (median wall of \(.rounds | length / 3) rounds):",
  "  ferry drain --parallel 1   \(.median_s["ferry-p1"]) s",
  "  ferry drain --parallel 2   \(.median_s["ferry-p2"]) s",
  "  virsh migrate shell loop   \(.median_s["virsh-loop"]) s",
  "  virsh loop / ferry --parallel 2 = \((.median_s["virsh-loop"] / .median_s["ferry-p2"]) * 100 | round / 100)"' "$OUT"
