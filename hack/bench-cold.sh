#!/usr/bin/env bash
# bench-cold.sh: the cold row of `make bench`. One shut-off VM with one sparse raw disk
# (BENCH_COLD_GIB GiB virtual, default 4, with BENCH_COLD_DATA_MIB MiB written in 1 MiB
# pieces spread over it, default 256) moves between host1 and host2, BENCH_REPS rounds
# (default 3), three ways:
#
#   ferry      ferry migrate --cold (sparse streams, checksum verified on the destination)
#   virsh      the dense baseline: virsh vol-download to a local file, then vol-create-as +
#              vol-upload on the other host (no --sparse), then vol-delete on the source
#   virsh-sp   the same with --sparse on both commands (libvirt's own sparse streams)
#
# Per move: wall time of the whole move and the bytes the streams carried (ferry: its JSON
# sent_bytes, data only; its verification reads the copy back once more, counted apart;
# virsh: the data it downloaded, which is the file's length when dense). Prints a table of
# medians and writes the figures as JSON to BENCH_COLD_OUT (default ./bench-cold.json).
# Environment: FERRY_LAB_ROOT, FERRY_LAB_NET (the lab, as for hack/lab-up.sh), BENCH_REPS,
# BENCH_COLD_GIB, BENCH_COLD_DATA_MIB, BENCH_COLD_OUT, FERRY_BIN (default ./bin/ferry).
# Needs the lab up (hack/lab-up.sh), bin/ferry (make build), qemu-io and jq.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
say() { printf '[bench-cold] %s\n' "$*" >&2; }
die() { printf '[bench-cold] ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lab-common.sh
. "$HERE/lab-common.sh"

export FERRY_LAB_ROOT=$ROOT
export FERRY_CONFIG=$ROOT/ferry-plain.yaml # virsh runs without --tls: so does ferry
FERRY=${FERRY_BIN:-$REPO/bin/ferry}
REPS=${BENCH_REPS:-3}
GIB=${BENCH_COLD_GIB:-4}
DATA=${BENCH_COLD_DATA_MIB:-256}
OUT=${BENCH_COLD_OUT:-$REPO/bench-cold.json}
for v in REPS GIB DATA; do
  case "${!v}" in '' | *[!0-9]* | 0) die "$v must be a positive integer, got '${!v}'" ;; esac
done
command -v jq >/dev/null || die "jq is missing (hack/install-deps.sh installs it)"
command -v qemu-io >/dev/null || die "qemu-io is missing (qemu-utils)"
[ -x "$FERRY" ] || die "$FERRY is missing; run make build"
[ -s "$FERRY_CONFIG" ] || die "no lab inventory at $FERRY_CONFIG; run hack/lab-up.sh"

WORK=$(mktemp -d /tmp/ferry-bench-cold.XXXXXX)
export FERRY_STATE=$WORK/ferry.db
VM=bench-cold
VOL=$VM-vda.img
IMG=/var/lib/libvirt/images/$VOL
lib() { echo "$(host_dir "$1")/lib"; }

cleanup() {
  local h
  for h in 1 2; do
    vsh "$h" undefine "$VM" >/dev/null 2>&1 || true
    rm -f "$(lib "$h")/images/$VOL" "$(host_dir "$h")/log/qemu/$VM.log"
    vsh "$h" pool-refresh default >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
cleanup
mkdir -p "$WORK"

# The disk: sparse raw, DATA MiB of non-zero data in 1 MiB pieces spread evenly. It is
# written anew on the source before every move: the dense baseline leaves a dense file.
step=$((GIB * 1024 / DATA))
cmds=()
for i in $(seq 0 $((DATA - 1))); do cmds+=(-c "write -P $((i % 250 + 1)) $((i * step))M 1M"); done
make_disk() {
  local f
  f=$(lib "$1")/images/$VOL
  rm -f "$f"
  truncate -s "${GIB}G" "$f"
  qemu-io -f raw "${cmds[@]}" "$f" >/dev/null
  vsh "$1" pool-refresh default >/dev/null
  alloc=$(($(stat -c %b "$f") * 512))
}
make_disk 1
xml=$WORK/$VM.xml
bash "$HERE/lab-guest.sh" xml "$VM" | sed "s|<controller type='usb' model='none'/>|&<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='$IMG'/><target dev='vda' bus='virtio'/></disk>|" >"$xml"
vsh 1 define "$xml" >/dev/null
say "disk: ${GIB} GiB raw, $((alloc >> 20)) MiB allocated; $REPS rounds of ferry, virsh (dense), virsh --sparse"

now() { date +%s.%N; }
where=1
results=$WORK/moves.jsonl
: >"$results"

move_ferry() {
  local from=$1 to=$2 t0 t1 out
  t0=$(now)
  out=$("$FERRY" migrate "$VM" --to "host$to" --cold -o json) || die "ferry cold move failed: $out"
  t1=$(now)
  jq -c --arg tool ferry --argjson s "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')" \
    '{tool: $tool, seconds: $s, wire_bytes: .sent_bytes, verify_bytes: .sent_bytes, state}' <<<"$out" >>"$results"
}

move_virsh() {
  local from=$1 to=$2 sparse=$3 tool t0 t1 tmp bytes
  tool=virsh
  [ -n "$sparse" ] && tool=virsh-sp
  tmp=$WORK/vol.img
  t0=$(now)
  vsh "$from" vol-download $sparse --pool default "$VOL" "$tmp"
  vsh "$to" vol-create-as default "$VOL" "$(stat -c %s "$tmp")" --format raw --allocation 0 >/dev/null
  vsh "$to" vol-upload $sparse --pool default "$VOL" "$tmp"
  vsh "$from" dumpxml "$VM" >"$WORK/def.xml"
  vsh "$to" define "$WORK/def.xml" >/dev/null
  vsh "$from" undefine "$VM" >/dev/null
  vsh "$from" vol-delete --pool default "$VOL" >/dev/null
  t1=$(now)
  bytes=$(($(stat -c %b "$tmp") * 512))
  [ -z "$sparse" ] && bytes=$(stat -c %s "$tmp")
  rm -f "$tmp"
  printf '{"tool":"%s","seconds":%s,"wire_bytes":%s,"verify_bytes":0,"state":"completed"}\n' "$tool" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')" "$bytes" >>"$results"
}

for r in $(seq 1 "$REPS"); do
  for tool in ferry virsh virsh-sp; do
    to=$((3 - where))
    make_disk "$where"
    case $tool in
    ferry) move_ferry "$where" "$to" ;;
    virsh) move_virsh "$where" "$to" "" ;;
    virsh-sp) move_virsh "$where" "$to" "--sparse" ;;
    esac
    say "round $r: $tool host$where -> host$to: $(tail -n 1 "$results")"
    where=$to
  done
done

jq -s --argjson gib "$GIB" --argjson alloc "$alloc" '
  def median: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
  {disk: {virtual_bytes: ($gib * 1073741824), allocated_bytes: $alloc},
   tools: (group_by(.tool) | map({tool: .[0].tool, moves: length,
     seconds_median: (map(.seconds) | median), wire_bytes_median: (map(.wire_bytes) | median),
     verify_bytes_median: (map(.verify_bytes) | median)}))}' "$results" >"$OUT"
printf '\ncold move of one %d GiB raw disk with %d MiB allocated (median of %d moves each, alternating hosts)\n' "$GIB" $((alloc >> 20)) "$REPS"
printf '%-10s %10s %14s %16s\n' TOOL TIME 'ON THE WIRE' 'VERIFY READ'
jq -r '.tools[] | [.tool, (.seconds_median | tostring | .[0:5] + " s"), ((.wire_bytes_median / 1048576 | floor | tostring) + " MiB"),
  ((.verify_bytes_median / 1048576 | floor | tostring) + " MiB")] | @tsv' "$OUT" |
  while IFS=$'\t' read -r a b c d; do printf '%-10s %10s %14s %16s\n' "$a" "$b" "$c" "$d"; done
say "figures: $OUT"
