#!/usr/bin/env bash
# bench-precopy.sh: the lab scenarios of `make bench`. Each scenario boots one guest
# (hack/lab-guest.sh) and moves it back and forth between host1 and host2 with ferry and
# with virsh migrate, the tools taking turns, BENCH_REPS rounds (default 3); the order
# rotates every round. With two tools a round is ferry, virsh, virsh, ferry, so each tool
# moves the guest both ways every round (the two directions do not always cost the same).
#
#   idle    128 MiB guest, 8 MiB working set, not written              ferry | virsh
#   hot     512 MiB guest, 32 MiB working set rewritten at 20000 pages/s (78 MiB/s)
#                                                                      ferry | virsh
#   overbw  512 MiB guest, 256 MiB working set at 20000 pages/s, over a BENCH_CAP_MIBPS (40)
#           MiB/s link, below the dirty rate: with emulated links (FERRY_LAB_LINKS=netns) the
#           host1 <-> host2 link is shaped to that rate and no tool is capped (ferry's inventory
#           says link_mibps); on the loopback lab every tool is capped at that rate (QEMU's cap,
#           which post-copy does not obey)
#                                     ferry | ferry --allow-postcopy | virsh --auto-converge
#                                     | virsh --postcopy --postcopy-after-precopy
#                                     | virsh --timeout BENCH_PLAIN_TIMEOUT (60) --timeout-suspend
#   big     2 GiB guest, 1792 MiB working set (filled at boot) rewritten at 5000 pages/s
#                                                                      ferry | virsh
#   tls     1 GiB guest, 768 MiB working set (filled at boot) rewritten at 2000 pages/s: the cost
#           of encrypting the migration stream (ferry: ferry.yaml, qemu+tls and migration TLS,
#           against ferry-plain.yaml; virsh: --tls against without)
#                                     ferry | ferry (TLS) | virsh | virsh --tls
#   rtt5, rtt50  the hot guest over a link with 5 ms / 50 ms of delay each way (emulated
#           links only: hack/lab-link.sh --delay)      ferry | virsh (rtt50: virsh --auto-converge,
#           as plain pre-copy cannot converge through one stream's window per 100 ms)
#
# Per move: end-to-end wall time of the command; migration time (ferry: its migration_ms,
# the libvirt migrate call; virsh: the virsh migrate process, which is that call); data
# sent, iterations, downtime (ferry: its JSON result; virsh: `domjobinfo --completed` on
# the destination, which libvirt fills from the source's statistics); the bandwidth QEMU
# measured (destination's domjobinfo, both tools; not kept for post-copy moves). After
# each move the guest must run on the destination with its heartbeat advancing and a clean
# console (no CORRUPT/Oops/panic), else the move's outcome says what went wrong.
# M/B: the guest's memory over the scenario's bandwidth (median of every move's measured
# bandwidth); the last column is each tool's median wall time over it.
#
# Prints a table per scenario (median (min-max)) and writes every figure and every move
# as JSON to BENCH_OUT (default ./bench-results.json). Environment: FERRY_LAB_ROOT,
# FERRY_LAB_NET (the lab to use, as for hack/lab-up.sh), BENCH_REPS, BENCH_SCENARIOS
# (default "idle hot overbw big tls", plus "rtt5 rtt50" with emulated links), BENCH_CAP_MIBPS, BENCH_PLAIN_TIMEOUT, BENCH_OUT, FERRY_BIN
# (default ./bin/ferry).
# Needs the lab up (hack/lab-up.sh), bin/ferry (make build) and jq; with emulated links it runs
# in the lab's client namespace (hack/bench.sh starts it through hack/lab-exec.sh).
#   bench-precopy.sh --report [FILE]     print the tables of an earlier run's JSON again
#   bench-precopy.sh --markdown [FILE]   the same as the Markdown table of the README
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
say() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

# Formatting shared by the terminal table and --markdown: med (min-max), fixed decimals.
JQ_FMT='
  def f($d): if . == null then "-" elif $d == 0 then (. + 0.5 | floor | tostring)
    else ((. * 100 + 0.5 | floor) / 100 | tostring | if test("\\.[0-9]$") then . + "0" elif test("\\.") then . else . + ".00" end) end;
  def cell($d): if . == null then "-" else "\(.median | f($d)) (\(.min | f($d))-\(.max | f($d)))" end;
  def outcome: (.outcomes | to_entries | map("\(.value) \(.key)") | join(", ")) +
    (if (.strategies | length) > 0 then " (" + (.strategies | join(", ")) + ")" else "" end);
  def cells: [.title, outcome, (.wall_s | cell(2)), (.migration_s | cell(2)), (.data_sent_mib | cell(0)),
    (.iterations | cell(0)), (.downtime_ms | cell(0)), (.wall_over_bound | f(2))];
  def header: ["tool", "outcome", "wall s", "migration s", "sent MiB", "iterations", "downtime ms", "wall/(M/B)"];
  def bound: "M = \(.memory_bytes / 1048576) MiB, B = \(if .bandwidth_bps then .bandwidth_bps / 1048576 | f(0) else "-" end) MiB/s (median measured), M/B = \(.bound_s | f(2)) s";'

# report FILE: the tables and checks of a bench-results.json on the terminal.
report() {
  jq -r "$JQ_FMT"'
    .scenarios[] | "", "\(.name): \(.description)", "  \(bound)", (header | @tsv),
      (.rows[] | cells | @tsv),
      ((.rows | map({key: .tool, value: .title}) | from_entries) as $t |
        .comparisons[] | "  median wall \($t[.ferry]) / \($t[.baseline]) = \(.ferry_over_baseline_wall | f(2))")' "$1" |
    awk -F'\t' 'NF < 8 { print; next } { printf "  %-46s %-31s %-20s %-20s %-20s %-12s %-18s %s\n", $1, $2, $3, $4, $5, $6, $7, $8 }'
  echo
  jq -r "$JQ_FMT"'.checks |
    (if .idle_ferry_over_virsh then "idle: ferry / virsh wall (median) = \(.idle_ferry_over_virsh.ratio | f(2)) (target <= 1.25)" else empty end),
    (if .overbw_autoconverge_over_ferry_postcopy then .overbw_autoconverge_over_ferry_postcopy |
       "overbw: virsh --auto-converge / ferry --allow-postcopy wall (median) = \(.ratio | f(2)) (target >= 3), ferry downtime max \(.ferry_downtime_max_ms) ms (ceiling \(.ceiling_ms) ms): \(if .met then "met" else "NOT met" end)" else empty end),
    (if .overbw_autoconverge_over_ferry_default then "overbw: virsh --auto-converge / ferry (default policy) wall (median) = \(.overbw_autoconverge_over_ferry_default.ratio | f(2))" else empty end)' "$1"
  jq -r '"load average: \(.machine.loadavg_start) at start, \(.machine.loadavg_end) at the end; 1-min load at each move: median \(.machine.loadavg_1m_during.median // "-"), max \(.machine.loadavg_1m_during.max // "-") (\(.machine.cpus) CPUs)"' "$1"
}

# markdown FILE: the same figures as one Markdown table (the README's).
markdown() {
  jq -r "$JQ_FMT"'
    def md: map(gsub("\\|"; "\\|")) | "| " + join(" | ") + " |";
    (header | .[0] = "scenario / tool" | md), ([range(8)] | map("---") | md),
    (.scenarios[] | (["**\(.name)**: \(.description); \(bound)"] + [range(7)] | map(tostring) | .[1:] |= map("") | md),
      (.rows[] | cells | .[0] = "`\(.[0])`" | md))' "$1" | sed 's/ (\([0-9.]*\)-\([0-9.]*\))/ (\1–\2)/g'
}

case "${1:-}" in
--report) report "${2:-${BENCH_OUT:-$REPO/bench-results.json}}"; exit ;;
--markdown) markdown "${2:-${BENCH_OUT:-$REPO/bench-results.json}}"; exit ;;
'') ;;
*) die "usage: bench-precopy.sh [--report|--markdown [bench-results.json]]" ;;
esac

export FERRY_LAB_ROOT=${FERRY_LAB_ROOT:-/var/lib/ferry-lab}
NET=${FERRY_LAB_NET:-127.0.10}
PLAIN_CONFIG=$FERRY_LAB_ROOT/ferry-plain.yaml # virsh runs without --tls: so does ferry
TLS_CONFIG=$FERRY_LAB_ROOT/ferry.yaml         # qemu+tls and migration TLS (the ferry-tls rows)
export FERRY_CONFIG=$PLAIN_CONFIG
FERRY=${FERRY_BIN:-$REPO/bin/ferry}
REPS=${BENCH_REPS:-3}
LINKS=$(sed -n 's/^FERRY_LAB_LINKS=//p' "$FERRY_LAB_ROOT/lab.env" 2>/dev/null | tail -n 1)
if [ "$LINKS" = netns ]; then
  SCENARIOS=${BENCH_SCENARIOS:-idle hot overbw big tls rtt5 rtt50}
else
  SCENARIOS=${BENCH_SCENARIOS:-idle hot overbw big tls}
fi
CAP=${BENCH_CAP_MIBPS:-40}
PLAIN_TIMEOUT=${BENCH_PLAIN_TIMEOUT:-60}
OUT=${BENCH_OUT:-$REPO/bench-results.json}
RUN_LIMIT=${BENCH_RUN_LIMIT:-400} # seconds; a move still running then is interrupted (SIGINT: both tools abort the job)
CEILING_MS=1000                   # ferry's default --max-downtime-ceiling

command -v jq >/dev/null || die "jq is missing (hack/install-deps.sh installs it)"
[ -x "$FERRY" ] || die "$FERRY is missing; run make build"
[ -s "$FERRY_CONFIG" ] || die "no lab inventory at $FERRY_CONFIG; run hack/lab-up.sh"
for v in REPS CAP PLAIN_TIMEOUT RUN_LIMIT; do
  case "${!v}" in '' | *[!0-9]* | 0) die "$v must be a positive integer, got '${!v}'" ;; esac
done
if [ "$LINKS" = netns ]; then
  [ "$(stat -L -c %i /proc/self/ns/net)" = "$(stat -L -c %i "/run/netns/$(sed -n 's/^FERRY_LAB_NETNS_CLIENT=//p' "$FERRY_LAB_ROOT/lab.env")" 2>/dev/null)" ] ||
    die "the lab at $FERRY_LAB_ROOT has emulated links: run this through hack/lab-exec.sh (hack/bench.sh does)"
fi

WORK=$(mktemp -d /tmp/ferry-bench.XXXXXX)
export FERRY_STATE=$WORK/ferry.db
RUNS=$WORK/runs.jsonl SCEN=$WORK/scenarios.jsonl
: >"$RUNS"
: >"$SCEN"
VM=''
DONE=0
cleanup() {
  [ -z "$VM" ] || bash "$HERE/lab-guest.sh" undefine "$VM" >/dev/null 2>&1 || true
  link_clear
  # a run that did not get to its tables keeps every move it made
  if [ "$DONE" = 0 ] && [ -s "$RUNS" ]; then
    cp "$RUNS" "${OUT%.json}-partial.jsonl" && say "interrupted: the moves so far are in ${OUT%.json}-partial.jsonl"
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

uri() { echo "qemu+tcp://$NET.$1/system"; }
now() { echo "$EPOCHREALTIME"; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
load1() { cut -d' ' -f1 /proc/loadavg; }
guest_log() { bash "$HERE/lab-guest.sh" log "$VM" "$@" 2>/dev/null; }
# where_running: the host number where $VM runs (or is paused); empty if none.
where_running() { bash "$HERE/lab-guest.sh" where "$VM" 2>/dev/null | awk '$2 == "running" || $2 == "paused" {sub(/^host/, "", $1); print $1; exit}'; }
# jobinfo N: the completed job statistics of $VM on host N as a JSON object ({} if none).
jobinfo() {
  { timeout 30 virsh -q -c "$(uri "$1")" domjobinfo "$VM" --completed --rawstats 2>/dev/null || true; } |
    awk -F': ' '$1 ~ /^[a-z_]+$/ && $2 ~ /^-?[0-9]+$/ { printf "%s\"%s\":%s", s, $1, $2; s = "," } BEGIN { printf "{" } END { print "}" }'
}

label() {
  case "$1" in
  ferry) echo "ferry migrate" ;;
  ferry-tls) echo "ferry migrate (qemu+tls, migration TLS)" ;;
  ferry-postcopy) echo "ferry migrate --allow-postcopy" ;;
  virsh) echo "virsh migrate" ;;
  virsh-tls) echo "virsh migrate --tls" ;;
  virsh-ac) echo "virsh migrate --auto-converge" ;;
  virsh-pc) echo "virsh migrate --postcopy --postcopy-after-precopy" ;;
  virsh-timeout) echo "virsh migrate --timeout $PLAIN_TIMEOUT --timeout-suspend" ;;
  esac
}

# link_set ARGS...: shape host1 <-> host2 (hack/lab-link.sh, both ways); link_clear undoes it.
LINK_SET=0
link_set() {
  bash "$HERE/lab-link.sh" host1 host2 "$@" --both >&2 || die "lab-link.sh host1 host2 $* failed"
  LINK_SET=1
}
link_clear() {
  [ "$LINK_SET" = 0 ] || bash "$HERE/lab-link.sh" host1 host2 --restore >&2 || say "lab-link.sh host1 host2 --restore failed"
  LINK_SET=0
}

# link_config MIBPS: ferry's inventory for a shaped link: ferry-plain.yaml with link_mibps (what
# ferry's plan assumes for the link, as an operator would write it), no cap on QEMU.
link_config() {
  sed "s/^\(    migration_address: .*\)\$/\1\n    link_mibps: $1/" "$PLAIN_CONFIG" >"$WORK/ferry-link.yaml"
  grep -q "link_mibps: $1" "$WORK/ferry-link.yaml" || die "could not write link_mibps into $WORK/ferry-link.yaml"
  echo "$WORK/ferry-link.yaml"
}

at=1 cap=0 scen='' seq=0 corrupt=0 config=$PLAIN_CONFIG
# move TOOL REP: move $VM from host $at to the other host with TOOL; append a JSON line to $RUNS.
move() {
  local tool=$1 rep=$2 from=$at to=$((3 - at)) rc=0 t0 t1 wall hb0 hb1 hb2 lrc=0 outcome info ferryjson='{}' err='' where cmd
  local -a args
  hb0=$(guest_log || true)
  case "$tool" in
  ferry*)
    args=(env "FERRY_CONFIG=$config" "$FERRY" migrate "$VM" --to "host$to" -o json)
    [ "$tool" != ferry-tls ] || args[1]=FERRY_CONFIG=$TLS_CONFIG
    [ "$cap" = 0 ] || args+=(--bandwidth "$cap")
    [ "$tool" != ferry-postcopy ] || args+=(--allow-postcopy)
    ;;
  virsh*)
    args=(virsh -c "$(uri "$from")" migrate --live --p2p --persistent --undefinesource "$VM" "$(uri "$to")" "tcp://$NET.$to")
    [ "$cap" = 0 ] || args+=(--bandwidth "$cap")
    [ "$tool" != virsh-ac ] || args+=(--auto-converge)
    [ "$tool" != virsh-pc ] || args+=(--postcopy --postcopy-after-precopy)
    [ "$tool" != virsh-tls ] || args+=(--tls)
    [ "$tool" != virsh-timeout ] || args+=(--timeout "$PLAIN_TIMEOUT" --timeout-suspend)
    ;;
  esac
  cmd=${args[*]}
  case "$tool" in ferry*) cmd="ferry${cmd#*"$FERRY"}" ;; esac
  local load=$(load1)
  seq=$((seq + 1))
  printf '[bench] %-7s rep %d  %-52s host%d -> host%d ... ' "$scen" "$rep" "$(label "$tool")" "$from" "$to" >&2
  t0=$(now)
  timeout -s INT -k 60 "$RUN_LIMIT" "${args[@]}" >"$WORK/out" 2>"$WORK/err" || rc=$?
  t1=$(now)
  wall=$(sub "$t1" "$t0")
  case "$tool" in ferry*) jq -e . "$WORK/out" >/dev/null 2>&1 && ferryjson=$(jq -c 'del(.checks)' "$WORK/out") ;; esac
  err=$(tail -c 400 "$WORK/err" | tr -s '\n' ' ')
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    # interrupted at RUN_LIMIT: make sure no job is left behind
    timeout 30 virsh -q -c "$(uri "$from")" domjobabort "$VM" >/dev/null 2>&1 || true
    sleep 3
  fi
  info=$(jobinfo "$to")
  where=$(where_running)
  # the guest: running somewhere, heartbeat advancing, console clean
  sleep 1
  hb1=$(guest_log) || lrc=$?
  if [ "$lrc" = 0 ]; then
    local end=$((SECONDS + 15))
    while hb2=$(guest_log) && [ "${hb2:-0}" -le "${hb1:-0}" ] && [ "$SECONDS" -lt "$end" ]; do sleep 0.25; done
    hb2=$(guest_log) || lrc=$?
  fi
  if [ "$lrc" = 3 ]; then
    outcome=corrupt corrupt=1
  elif [ -z "$where" ]; then
    outcome=lost
  elif [ "$lrc" != 0 ] || [ "${hb2:-0}" -le "${hb1:-0}" ]; then
    outcome=no-heartbeat
  elif [ "$where" = "$from" ]; then
    case "$rc" in 124 | 137) outcome=did-not-finish ;; 3) outcome=rolled-back ;; *) outcome=failed ;; esac
  elif [ "$rc" != 0 ]; then
    outcome=failed # on the destination but the tool said no
  elif [ "$tool" = virsh-timeout ] && awk -v w="$wall" -v t="$PLAIN_TIMEOUT" 'BEGIN { exit !(w >= t) }'; then
    outcome=suspended # virsh paused the guest at the timeout; the copy finished as stop-and-copy
  else
    outcome=ok
  fi
  [ -z "$where" ] || at=$where
  jq -nc --arg scen "$scen" --arg tool "$tool" --arg title "$(label "$tool")" --arg cmd "$cmd" \
    --argjson rep "$rep" --argjson seq "$seq" --argjson from "$from" --argjson to "$to" \
    --argjson rc "$rc" --arg outcome "$outcome" --argjson wall "$wall" --argjson load "$load" \
    --arg hb0 "${hb0:-}" --arg hb2 "${hb2:-}" --arg err "$err" --argjson info "$info" --argjson f "$ferryjson" '
    ($tool | startswith("ferry")) as $isf |
    {scenario: $scen, tool: $tool, title: $title, command: $cmd, rep: $rep, seq: $seq,
     from: ("host" + ($from | tostring)), to: ("host" + ($to | tostring)), exit: $rc, outcome: $outcome,
     wall_s: $wall,
     migration_s: (if $isf then (if $f.migration_ms then $f.migration_ms / 1000 else null end) else $wall end),
     data_sent_bytes: (if $isf then $f.data_sent_bytes else $info.memory_processed end),
     iterations: (if $isf then $f.iterations else $info.memory_iteration end),
     downtime_ms: (if $isf then $f.downtime_ms else $info.downtime end),
     bandwidth_bps: $info.memory_bps,
     libvirt_elapsed_ms: $info.time_elapsed,
     postcopy: (if $isf then ($f.postcopy // false) else false end),
     strategy: (if $isf then $f.strategy else null end),
     policy_actions: (if $isf then ($f.policy_actions // []) else null end),
     ferry_state: (if $isf then $f.state else null end),
     ferry_total_ms: (if $isf then $f.total_ms else null end),
     plan: (if $isf and $f.plan then {strategy: $f.plan.strategy, dirty_bytes_per_sec: $f.plan.inputs.dirty_bytes_per_sec,
             bandwidth_bytes_per_sec: $f.plan.inputs.bandwidth_bytes_per_sec, dirty_rate_source: $f.plan.dirty_rate_source,
             auto_converge: $f.plan.job.auto_converge, throttle_initial_pct: $f.plan.job.throttle_initial_pct,
             postcopy_armed: $f.plan.job.postcopy, reason: $f.plan.reason} else null end),
     heartbeat_before: ($hb0 | tonumber? // null), heartbeat_after: ($hb2 | tonumber? // null),
     loadavg_1m: $load,
     error: (if $outcome == "ok" or $outcome == "suspended" then null
             elif $isf and $f.error then $f.error else $err end)}' >>"$RUNS"
  tail -n 1 "$RUNS" | jq -r '"\(.wall_s * 100 | round / 100) s  \(.outcome)  sent \((.data_sent_bytes // 0) / 1048576 | floor) MiB  iter \(.iterations // "-")  downtime \(.downtime_ms // "-") ms"' >&2
}

# scenario NAME DESCRIPTION MEM WSS RATE CAP TOOL...: one guest, REPS rounds of TOOL... moves,
# over the link link_set shaped (if any; link_clear after).
scenario() {
  scen=$1
  local desc=$2 mem=$3 wss=$4 rate=$5 t0 r i n
  cap=$6
  shift 6
  local -a tools=("$@")
  VM=bench-$scen corrupt=0 at=1
  say "scenario $scen: $desc"
  bash "$HERE/lab-guest.sh" undefine "$VM" >/dev/null 2>&1 || true
  bash "$HERE/lab-guest.sh" define "$VM" --host 1 --mem "$mem" --wss "$wss" --rate "$rate" --start >/dev/null 2>&1 ||
    die "could not start guest $VM on host1"
  guest_log --wait 180 >/dev/null || die "guest $VM shows no heartbeat"
  sleep 2
  t0=$(now)
  n=${#tools[@]}
  for r in $(seq "$REPS"); do
    for i in $(seq 0 $((n - 1))); do
      [ "$corrupt" = 0 ] || break 2
      move "${tools[$(((i + r - 1) % n))]}" "$r"
      sleep 2 # let the guest's dirtying settle on its new host
    done
  done
  bash "$HERE/lab-guest.sh" undefine "$VM" >/dev/null 2>&1 || true
  VM=''
  link_clear
  config=$PLAIN_CONFIG
  jq -nc --arg name "$scen" --arg desc "$desc" --argjson mem "$mem" --argjson wss "$wss" --argjson rate "$rate" \
    --argjson cap "$cap" --argjson secs "$(sub "$(now)" "$t0")" --arg tools "${tools[*]}" \
    '{name: $name, description: $desc, memory_bytes: ($mem * 1048576), working_set_mib: $wss, dirty_pages_per_sec: $rate,
      cap_mibps: (if $cap == 0 then null else $cap end), tools: ($tools | split(" ")), seconds: $secs}' >>"$SCEN"
}

START=$(now)
STARTED_AT=$(date -u +%FT%TZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
QEMUS_START=$(pgrep -c -x qemu-system-x86 || true)
say "lab $FERRY_LAB_ROOT ($NET.x), $REPS rounds, scenarios: $SCENARIOS; load average $LOAD_START, $QEMUS_START QEMU processes on the machine"
for s in $SCENARIOS; do
  case "$s" in
  idle) scenario idle "idle 128 MiB guest (8 MiB working set, not written), no cap" 128 8 0 0 ferry virsh virsh ferry ;;
  hot) scenario hot "512 MiB guest rewriting a 32 MiB working set at 20000 pages/s (78 MiB/s), no cap" 512 32 20000 0 ferry virsh virsh ferry ;;
  overbw)
    if [ "$LINKS" = netns ]; then
      link_set --rate "${CAP}MiB"
      config=$(link_config "$CAP")
      scenario overbw "512 MiB guest dirtying a 256 MiB working set at 20000 pages/s (78 MiB/s), over a $CAP MiB/s link (emulated, both ways), no tool capped" \
        512 256 20000 0 ferry ferry-postcopy virsh-ac virsh-pc virsh-timeout
    else
      scenario overbw "512 MiB guest dirtying a 256 MiB working set at 20000 pages/s (78 MiB/s), every tool capped at $CAP MiB/s" \
        512 256 20000 "$CAP" ferry ferry-postcopy virsh-ac virsh-pc virsh-timeout
    fi
    ;;
  big) scenario big "2 GiB guest, 1792 MiB working set filled at boot, rewritten at 5000 pages/s (20 MiB/s), no cap" 2048 1792 5000 0 ferry virsh virsh ferry ;;
  tls) scenario tls "1 GiB guest, 768 MiB working set filled at boot, rewritten at 2000 pages/s (8 MiB/s), no cap: TLS on and off" \
    1024 768 2000 0 ferry ferry-tls virsh virsh-tls ;;
  rtt5)
    [ "$LINKS" = netns ] || die "scenario $s needs emulated links (FERRY_LAB_LINKS=netns hack/lab-up.sh)"
    link_set --delay 5ms
    scenario rtt5 "512 MiB guest rewriting a 32 MiB working set at 20000 pages/s (78 MiB/s), 5 ms delay each way, no cap" \
      512 32 20000 0 ferry virsh virsh ferry
    ;;
  rtt50)
    # one stream over a 100 ms round trip carries ~30 MiB/s, below the dirty rate: plain
    # pre-copy never converges (virsh ran 400 s without), so virsh gets --auto-converge
    [ "$LINKS" = netns ] || die "scenario $s needs emulated links (FERRY_LAB_LINKS=netns hack/lab-up.sh)"
    link_set --delay 50ms
    scenario rtt50 "512 MiB guest rewriting a 32 MiB working set at 20000 pages/s (78 MiB/s), 50 ms delay each way, no cap" \
      512 32 20000 0 ferry virsh-ac virsh-ac ferry
    ;;
  *) die "unknown scenario '$s' (idle hot overbw big tls rtt5 rtt50)" ;;
  esac
done
TOTAL=$(sub "$(now)" "$START")

# --- aggregate -------------------------------------------------------------------------
jq -n --slurpfile runs "$RUNS" --slurpfile scen "$SCEN" --arg started "$STARTED_AT" --arg finished "$(date -u +%FT%TZ)" \
  --argjson total "$TOTAL" --argjson reps "$REPS" --arg load0 "$LOAD_START" --arg load1 "$(cut -d' ' -f1-3 /proc/loadavg)" \
  --argjson qemus "${QEMUS_START:-0}" --arg libvirt "$(virsh --version 2>/dev/null)" \
  --arg qemu "$(qemu-system-x86_64 --version 2>/dev/null | head -n 1)" --argjson ncpu "$(nproc)" \
  --argjson ceiling "$CEILING_MS" --argjson plaint "$PLAIN_TIMEOUT" \
  --arg rev "$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)" --arg ferry "$FERRY" '
  def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def r3: if . == null then null else (. * 1000 | round) / 1000 end;
  def stat(f): [.[] | f | select(. != null)] | if length == 0 then null else {median: (median | r3), min: (min | r3), max: (max | r3)} end;
  def done: .outcome == "ok" or .outcome == "suspended";
  ($runs | map(.loadavg_1m)) as $loads |
  {started_at: $started, finished_at: $finished, total_s: $total, reps: $reps, revision: $rev, ferry_binary: $ferry,
   machine: {cpus: $ncpu, loadavg_start: $load0, loadavg_end: $load1,
             loadavg_1m_during: (if ($loads | length) > 0 then {median: ($loads | median | r3), min: ($loads | min), max: ($loads | max)} else null end),
             other_qemu_processes_at_start: $qemus, libvirt: $libvirt, qemu: $qemu},
   downtime_ceiling_ms: $ceiling, plain_timeout_s: $plaint,
   scenarios: [$scen[] as $s |
     ($runs | map(select(.scenario == $s.name))) as $rs |
     ([$rs[] | select(done) | .bandwidth_bps | select(. != null)] | median) as $bw |
     (if $bw then $s.memory_bytes / $bw else null end) as $bound |
     $s + {bandwidth_bps: ($bw | r3), bound_s: ($bound | r3),
       rows: ([$s.tools | unique[] as $t | ($s.tools | index($t)) as $order |
         ($rs | map(select(.tool == $t))) as $tr | ($tr | map(select(done))) as $ok |
         {order: $order, tool: $t, title: ($tr[0].title // $t), command: ($tr[0].command // null),
          moves: ($tr | length), completed: ($ok | length),
          outcomes: ($tr | group_by(.outcome) | map({key: .[0].outcome, value: length}) | from_entries),
          wall_s: ($ok | stat(.wall_s)), migration_s: ($ok | stat(.migration_s)),
          data_sent_mib: ($ok | stat(if .data_sent_bytes then .data_sent_bytes / 1048576 else null end)),
          iterations: ($ok | stat(.iterations)), downtime_ms: ($ok | stat(.downtime_ms)),
          bandwidth_mibps: ($ok | stat(if .bandwidth_bps then .bandwidth_bps / 1048576 else null end)),
          postcopy_moves: ($ok | map(select(.postcopy)) | length),
          strategies: ($ok | map(.strategy | select(. != null)) | unique)}
         | . + {wall_over_bound: (if $bound and .wall_s then .wall_s.median / $bound | r3 else null end),
                migration_over_bound: (if $bound and .migration_s then .migration_s.median / $bound | r3 else null end)}]
         | sort_by(.order) | map(del(.order)))}
     | .comparisons = ([.rows[] | {key: .tool, value: .wall_s.median}] | from_entries as $w |
         [[["ferry", "virsh"], ["ferry-tls", "virsh-tls"], ["ferry-tls", "ferry"], ["virsh-tls", "virsh"],
           ["ferry", "virsh-ac"], ["ferry-postcopy", "virsh-ac"], ["ferry-postcopy", "virsh-pc"]][] as [$a, $b] |
          select($w[$a] and $w[$b]) | {ferry: $a, baseline: $b, ferry_over_baseline_wall: ($w[$a] / $w[$b] | r3)}])],
   runs: $runs}
  | .checks = (
      ([.scenarios[] | select(.name == "idle") | .rows] | first) as $idle |
      ([.scenarios[] | select(.name == "overbw") | .rows] | first) as $ob |
      def row($rows; $t): ($rows // []) | map(select(.tool == $t)) | first;
      {idle_ferry_over_virsh: (row($idle; "ferry").wall_s.median as $f | row($idle; "virsh").wall_s.median as $v
                               | if $f and $v then {ratio: ($f / $v), target: "<= 1.25", met: ($f / $v <= 1.25)} else null end),
       overbw_autoconverge_over_ferry_postcopy: (row($ob; "virsh-ac").wall_s.median as $v | row($ob; "ferry-postcopy") as $p
                               | if $v and $p.wall_s then {ratio: ($v / $p.wall_s.median), target: ">= 3",
                                   ferry_downtime_max_ms: $p.downtime_ms.max, ceiling_ms: $ceiling,
                                   met: ($v / $p.wall_s.median >= 3 and $p.downtime_ms.max <= $ceiling and $p.completed == $p.moves)} else null end),
       overbw_autoconverge_over_ferry_default: (row($ob; "virsh-ac").wall_s.median as $v | row($ob; "ferry").wall_s.median as $f
                               | if $v and $f then {ratio: ($v / $f)} else null end)})
  ' >"$OUT"

DONE=1
# --- table ---------------------------------------------------------------------------------
report "$OUT"
printf 'json: %s\nbench-precopy total %s s\n' "$OUT" "$TOTAL"
