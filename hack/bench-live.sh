#!/usr/bin/env bash
# bench-live.sh: ferry migrate vs virsh migrate for an idle 128 MiB guest on the
# lab, wall time of the whole process (/usr/bin/time), same guest, same run.
# Directions alternate so both tools move it host1->host2 and host2->host1.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export FERRY_LAB_ROOT=${FERRY_LAB_ROOT:-/var/lib/ferry-lab}
export FERRY_CONFIG=$FERRY_LAB_ROOT/ferry.yaml
export FERRY_STATE=${FERRY_STATE:-$(mktemp -d)/bench.db}
FERRY=$REPO/bin/ferry
REPS=${REPS:-5}
VM=bench-idle
OUT=${BENCH_OUT:-$REPO/bench-live.json}

NET=${FERRY_LAB_NET:-127.0.10}
uri() { echo "qemu+tcp://$NET.$1/system"; }
timed() { # timed FILE CMD...: wall seconds of CMD into FILE
  local f=$1; shift
  /usr/bin/time -f %e -o "$f" "$@" >/dev/null
}

bash "$HERE/lab-guest.sh" undefine "$VM" >/dev/null 2>&1 || true
bash "$HERE/lab-guest.sh" define "$VM" --host 1 --mem 128 --wss 8 --rate 0 --start >/dev/null 2>&1
bash "$HERE/lab-guest.sh" log "$VM" --wait 60 >/dev/null
trap 'bash "$HERE/lab-guest.sh" undefine "$VM" >/dev/null 2>&1 || true' EXIT

ferry_t=() virsh_t=()
at=1
move() { # move TOOL: migrate VM from $at to the other host with TOOL, record wall time
  local to=$((3 - at)) f; f=$(mktemp)
  if [ "$1" = ferry ]; then
    timed "$f" "$FERRY" migrate "$VM" --to "host$to"
    ferry_t+=("$(cat "$f")")
  else
    timed "$f" virsh -c "$(uri "$at")" migrate --live --p2p --persistent --undefinesource "$VM" "$(uri "$to")" "tcp://$NET.$to"
    virsh_t+=("$(cat "$f")")
  fi
  rm -f "$f"; at=$to
}
for _ in $(seq "$REPS"); do move ferry; move virsh; move virsh; move ferry; done

stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.2f %.2f %.2f", a[int((NR+1)/2)], a[1], a[NR]}'; }
read -r fm fmin fmax <<<"$(stats "${ferry_t[@]}")"
read -r vm vmin vmax <<<"$(stats "${virsh_t[@]}")"
ratio=$(awk -v a="$fm" -v b="$vm" 'BEGIN{printf "%.2f", a/b}')
printf '\nidle 128 MiB guest, %d moves each, wall seconds per move (median, min, max)\n' "${#ferry_t[@]}"
printf '%-58s %6s %6s %6s\n' tool median min max
printf '%-58s %6s %6s %6s\n' "ferry migrate" "$fm" "$fmin" "$fmax"
printf '%-58s %6s %6s %6s\n' "virsh migrate --live --p2p --persistent --undefinesource" "$vm" "$vmin" "$vmax"
printf 'ferry / virsh = %s (target <= 1.25)\n' "$ratio"
printf '{"scenario":"idle-128MiB","moves":%d,"ferry_s":{"median":%s,"min":%s,"max":%s},"virsh_s":{"median":%s,"min":%s,"max":%s},"ratio":%s}\n' \
  "${#ferry_t[@]}" "$fm" "$fmin" "$fmax" "$vm" "$vmin" "$vmax" "$ratio" >"$OUT"
echo "json: $OUT"
