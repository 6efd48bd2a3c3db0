#!/usr/bin/env bash
# lab-link.sh: shape the emulated links of a lab brought up with FERRY_LAB_LINKS=netns (hack/lab-up.sh).
#
#   lab-link.sh A B [--rate R] [--delay D] [--jitter J] [--loss L] [--both]
#        set the link A -> B to exactly these settings (what is not given is not shaped);
#        --both sets B -> A the same way
#   lab-link.sh A B --cut        drop everything between A and B, both ways (until --restore;
#                                a delay is cleared)
#   lab-link.sh A B --restore    remove the settings of A -> B and B -> A: unshaped again
#   lab-link.sh A B --show       A -> B and B -> A: the settings, then tc -s statistics and the
#                                delay stage's counters (frames, bytes, dropped, queued)
#   lab-link.sh --show           every shaped link of the lab
#
#   A, B  host1, host2, ... (the lab's hosts) or client (where ferry and the tests run, lab-exec.sh)
#   R     bandwidth in bytes/s: 40MiB, 512KiB, 1.5GiB, 40MB (/s may follow), or bits/s: 300mbit, 1gbit
#   D, J  one-way delay, and its jitter (with --delay; each frame gets D plus a uniform draw in
#         [-J, +J], never reordered): 50ms, 500us, 1s
#   L     loss: 0.1% (each packet dropped at random with that chance; 100% drops all of A -> B)
#
# Rate, loss and cuts are on A's side (hack/lab-net.sh): an HTB class per peer on the egress of A's
# veth, rate R (else unlimited) with a queue of 100 ms at that rate, a blackhole leaf when cut;
# loss is a random draw in a classic BPF filter sending that share of A -> B packets to a
# blackhole class. Delay and jitter come after, in
# the switch: A -> B's IPv4 frames are redirected from A's bridge port through a tap of the
# userspace delay stage hack/linkdelay (no netem needed; built into $ROOT/bin, one daemon a lab,
# pid $ROOT/run/linkdelay.pid, log $ROOT/log/linkdelay.log, stopped by lab-down.sh).
# Exit status: 0 done; 1 the lab is not there or tc failed; 2 bad usage; 4 the delay stage
# cannot start (building hack/linkdelay needs Go; it needs /dev/net/tun).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
say() { printf '[lab-link] %s\n' "$*" >&2; }
die() { printf '[lab-link] ERROR: %s\n' "$*" >&2; exit 1; }
bad() { printf '[lab-link] ERROR: %s\n' "$*" >&2; printf '[lab-link] usage: lab-link.sh A B [--rate R] [--delay D] [--jitter J] [--loss L] [--both] | --cut | --restore | --show  (--help)\n' >&2; exit 2; }
# shellcheck source=lab-common.sh
. "$HERE/lab-common.sh"
# shellcheck source=lab-net.sh
. "$HERE/lab-net.sh"

usage() { sed -n '2,28s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }

# --- arguments ---------------------------------------------------------------------------------
eps=() rate='' delay='' jitter='' loss='' both=0 action=set
while [ $# -gt 0 ]; do
  case "$1" in
  -h | --help) usage ;;
  --rate | --delay | --jitter | --loss)
    [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#--}" = "$2" ] || bad "$1 needs a value"
    printf -v "${1#--}" '%s' "$2"
    shift 2
    ;;
  --rate=* | --delay=* | --jitter=* | --loss=*)
    k=${1%%=*}
    printf -v "${k#--}" '%s' "${1#*=}"
    [ -n "${1#*=}" ] || bad "$k needs a value"
    shift
    ;;
  --both) both=1; shift ;;
  --cut | --restore | --show)
    [ "$action" = set ] || bad "$1 and --$action do not go together"
    action=${1#--}
    shift
    ;;
  -*) bad "unknown option $1" ;;
  *) eps+=("$1"); shift ;;
  esac
done

shaping="$rate$delay$jitter$loss"
case "$action" in
set)
  [ ${#eps[@]} -eq 2 ] || bad "name two ends of a link (hostN or client), got ${#eps[@]}: ${eps[*]:-none}"
  [ -n "$shaping" ] || bad "nothing to set for ${eps[0]} -> ${eps[1]}: give --rate, --delay, --jitter or --loss (or --cut, --restore, --show)"
  ;;
show)
  [ ${#eps[@]} -eq 0 ] || [ ${#eps[@]} -eq 2 ] || bad "--show takes two ends of a link, or none for every link; got: ${eps[*]}"
  ;;
*)
  [ ${#eps[@]} -eq 2 ] || bad "--$action needs two ends of a link (hostN or client), got ${#eps[@]}: ${eps[*]:-none}"
  ;;
esac
if [ "$action" != set ]; then
  [ -z "$shaping" ] || bad "--$action takes no --rate, --delay, --jitter or --loss"
  [ "$both" = 0 ] || bad "--$action is for both directions already; --both is for setting"
fi
if [ ${#eps[@]} -eq 2 ] && [ "${eps[0]}" = "${eps[1]}" ]; then
  bad "a link needs two different ends, got ${eps[0]} twice"
fi

# num_mul VALUE MULT: VALUE*MULT rounded, for decimal VALUEs.
num_mul() { awk -v n="$1" -v m="$2" 'BEGIN { printf "%.0f", n * m }'; }

# rate_bits R: R as bits/s.
rate_bits() {
  local v=${1%/s} num unit mult bits
  [[ $v =~ ^([0-9]+(\.[0-9]+)?)([A-Za-z]+)$ ]] ||
    bad "--rate '$1': want a number and a unit, e.g. 40MiB (bytes/s) or 300mbit (bits/s)"
  num=${BASH_REMATCH[1]} unit=${BASH_REMATCH[3]}
  case "$unit" in
  B) mult=8 ;;
  KiB) mult=8192 ;;
  MiB) mult=8388608 ;;
  GiB) mult=8589934592 ;;
  KB | kB) mult=8000 ;;
  MB) mult=8000000 ;;
  GB) mult=8000000000 ;;
  bit) mult=1 ;;
  kbit | Kbit) mult=1000 ;;
  mbit | Mbit) mult=1000000 ;;
  gbit | Gbit) mult=1000000000 ;;
  Kibit | kibit) mult=1024 ;;
  Mibit | mibit) mult=1048576 ;;
  Gibit | gibit) mult=1073741824 ;;
  *) bad "--rate '$1': unknown unit '$unit' (bytes/s: B KiB MiB GiB KB MB GB; bits/s: bit kbit mbit gbit Kibit Mibit Gibit)" ;;
  esac
  bits=$(num_mul "$num" "$mult")
  [ "$bits" -ge 8000 ] || bad "--rate '$1' is below 1 kB/s"
  [ "$bits" -le 100000000000 ] || bad "--rate '$1' is above 100 Gbit/s"
  echo "$bits"
}

# time_us D: D as microseconds.
time_us() {
  local opt=$1 v=$2 us
  [[ $v =~ ^([0-9]+(\.[0-9]+)?)(us|ms|s)$ ]] || bad "$opt '$v': want a number and us, ms or s, e.g. 50ms"
  case "${BASH_REMATCH[3]}" in
  us) us=$(num_mul "${BASH_REMATCH[1]}" 1) ;;
  ms) us=$(num_mul "${BASH_REMATCH[1]}" 1000) ;;
  s) us=$(num_mul "${BASH_REMATCH[1]}" 1000000) ;;
  esac
  [ "$us" -le 60000000 ] || bad "$opt '$v' is above 60 s"
  echo "$us"
}

# loss_threshold L: the draw (0..2^32-1) under which a packet is dropped.
loss_threshold() {
  local v=${1%\%} t
  [[ $v =~ ^[0-9]+(\.[0-9]+)?$ ]] || bad "--loss '$1': want a percentage, e.g. 0.1%"
  awk -v p="$v" 'BEGIN { exit !(p > 0 && p <= 100) }' || bad "--loss '$1': want more than 0% and at most 100%"
  t=$(num_mul "$v" 42949672.96)
  [ "$t" -ge 1 ] || t=1
  [ "$t" -le 4294967295 ] || t=4294967295
  echo "$t"
}

rate_b='' delay_us='' jitter_us='' loss_t=''
[ -z "$rate" ] || rate_b=$(rate_bits "$rate")
[ -z "$delay" ] || delay_us=$(time_us --delay "$delay")
[ -z "$jitter" ] || jitter_us=$(time_us --jitter "$jitter")
[ -z "$loss" ] || loss_t=$(loss_threshold "$loss")
[ -z "$jitter" ] || [ -n "$delay" ] || bad "--jitter needs --delay (the jitter is around the delay)"
[ -z "$delay_us" ] || [ "$delay_us" -gt 0 ] || bad "--delay '$delay' is zero: leave it out for no delay"

# --- the lab -----------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "must run as root (ip netns exec, tc)"
[ "$LAB_LINKS" = netns ] ||
  die "the lab at $ROOT has no emulated links: bring it up with FERRY_LAB_LINKS=netns hack/lab-up.sh (FERRY_LAB_ROOT and FERRY_LAB_NET pick the lab)"
[ -s "$ROOT/links.env" ] || die "the lab at $ROOT is not up with emulated links ($ROOT/links.env is missing): FERRY_LAB_LINKS=netns hack/lab-up.sh"
command -v tc >/dev/null || die "tc (iproute2) is missing"

# endpoint NAME: sets EP_NS, EP_ADDR, EP_MINOR for hostN or client.
endpoint() {
  local n
  case "$1" in
  client) EP_NS=$NS_CLIENT EP_ADDR=$CLIENT_ADDR EP_MINOR=250 ;;
  host[1-9] | host[1-9][0-9])
    n=${1#host}
    [ -d "$(host_dir "$n")" ] || bad "$1 is not a host of the lab at $ROOT (hosts: $(lab_hosts | sed 's/^/host/' | paste -sd' '))"
    EP_NS=$(host_ns "$n") EP_ADDR=$(host_addr "$n") EP_MINOR=$n
    ;;
  *) bad "unknown end '$1': hostN (a lab host) or client" ;;
  esac
  net_ns_exists "$EP_NS" || die "$1's network namespace $EP_NS is missing: is the lab at $ROOT up? (FERRY_LAB_LINKS=netns hack/lab-up.sh)"
}
for e in "${eps[@]}"; do endpoint "$e"; done

# tcx NS ARGS...: tc in namespace NS; on failure, the error names the command.
tcx() {
  local ns=$1 out
  shift
  out=$(ip netns exec "$ns" tc "$@" 2>&1) || die "tc in $ns: tc $*: $out"
  [ -z "$out" ] || printf '%s\n' "$out"
}
# tcq NS ARGS...: tc in NS, output only ("" on failure).
tcq() {
  local ns=$1
  shift
  ip netns exec "$ns" tc "$@" 2>/dev/null || true
}

hex() { printf '%x' "$1"; }

# --- the delay stage: hack/linkdelay, a daemon in the switch namespace --------------------------
# For a delayed A -> B it holds a tap dl-PA-PB (PA, PB: the bridge ports h1, h2, ..., client);
# in the switch, tc redirects A -> B's IPv4 frames from PA's ingress (clsact, filter prio 1000+m)
# into the tap, and what the tap gives back (the frames, once due) from its ingress to PB.
LD_SRC=$HERE/linkdelay
LD_BIN=$ROOT/bin/linkdelay
LD_SOCK=$ROOT/run/linkdelay.sock
LD_PID=$ROOT/run/linkdelay.pid
LD_LOG=$ROOT/log/linkdelay.log

# cant NOTE: the delay stage cannot start (exit 4).
cant() { printf '[lab-link] ERROR: the delay stage (hack/linkdelay) cannot start: %s\n' "$*" >&2; exit 4; }

# ep_port NAME: the bridge port of hostN or client.
ep_port() { case "$1" in client) echo client ;; *) echo "h${1#host}" ;; esac; }

# ld_build: $LD_BIN, (re)built when missing or older than its source.
ld_build() {
  local go out
  if [ -x "$LD_BIN" ] && [ -z "$(find "$LD_SRC" -maxdepth 1 -name '*.go' ! -name '*_test.go' -newer "$LD_BIN" 2>/dev/null)" ]; then
    return 0
  fi
  go=$(command -v go 2>/dev/null || true)
  [ -n "$go" ] || go=/usr/local/go/bin/go
  [ -x "$go" ] || cant "Go is missing (not on PATH, not at /usr/local/go/bin) to build $LD_BIN"
  mkdir -p "${LD_BIN%/*}"
  say "building $LD_BIN"
  out=$(cd "$HERE/.." && "$go" build -o "$LD_BIN.tmp" ./hack/linkdelay 2>&1) || cant "go build ./hack/linkdelay failed: $out"
  mv -f "$LD_BIN.tmp" "$LD_BIN"
}

# ld_pid: the daemon's PID if it runs.
ld_pid() { live_pid "$LD_PID" linkdelay; }

# ld_ctl ARGS...: a command to the daemon (its output on stdout; its error on stderr, status 1).
ld_ctl() { "$LD_BIN" ctl -sock "$LD_SOCK" "$@"; }

# ld_ensure: the daemon runs (started in the switch namespace if not).
ld_ensure() {
  local pid i
  ld_build
  pid=$(ld_pid)
  if [ -n "$pid" ] && ld_ctl ping >/dev/null 2>&1; then
    return 0
  fi
  [ -z "$pid" ] || cant "linkdelay pid $pid (from $LD_PID) runs but does not answer on $LD_SOCK: see $LD_LOG"
  [ -c /dev/net/tun ] || cant "/dev/net/tun is missing"
  mkdir -p "${LD_SOCK%/*}" "${LD_LOG%/*}"
  rm -f "$LD_PID"
  # its own session, none of our descriptors (8 holds the links lock)
  setsid ip netns exec "$NS_SWITCH" "$LD_BIN" serve -sock "$LD_SOCK" -pid "$LD_PID" -log "$LD_LOG" \
    </dev/null >>"$LD_LOG" 2>&1 8>&- 9>&- &
  for i in $(seq 1 100); do
    pid=$(ld_pid)
    if [ -n "$pid" ] && ld_ctl ping >/dev/null 2>&1; then
      say "started the delay stage in $NS_SWITCH (linkdelay pid $pid, log $LD_LOG)"
      return 0
    fi
    sleep 0.1
  done
  cant "linkdelay did not come up within 10s: $(tail -n 3 "$LD_LOG" 2>/dev/null | tr '\n' ' ')"
}

# delay_set FROM TO: delay FROM -> TO by delay_us, jitter_us (in the switch).
delay_set() {
  local pa pb m dst tap out made
  endpoint "$2"
  dst=$EP_ADDR m=$EP_MINOR
  pa=$(ep_port "$1") pb=$(ep_port "$2")
  tap=dl-$pa-$pb
  ld_ensure
  out=$(ld_ctl set "$tap" "${delay_us}us" "${jitter_us:-0}us" 2>&1) || die "the delay stage refused $1 -> $2: $out"
  # the tap hands the frames, once due, to TO's port (a new tap: the daemon made it just now)
  if [ -z "$(tcq "$NS_SWITCH" qdisc show dev "$tap" clsact)" ]; then
    tcx "$NS_SWITCH" qdisc add dev "$tap" clsact
  fi
  if [ -z "$(tcq "$NS_SWITCH" filter show dev "$tap" ingress prio 1)" ]; then
    tcx "$NS_SWITCH" filter add dev "$tap" ingress prio 1 u32 match u32 0 0 action mirred egress redirect dev "$pb"
  fi
  # FROM's port sends FROM -> TO into the tap (ARP stays on the bridge); made again with a new
  # tap (the one an old filter named is gone: the daemon restarted)
  if [ -z "$(tcq "$NS_SWITCH" qdisc show dev "$pa" clsact)" ]; then
    tcx "$NS_SWITCH" qdisc add dev "$pa" clsact
  fi
  case "$out" in made*) made=1 ;; *) made=0 ;; esac
  out=$(tcq "$NS_SWITCH" filter show dev "$pa" ingress prio $((1000 + m)))
  case "$made:$out" in
  0:*"Redirect to device $tap)"*) ;;
  *)
    [ -z "$out" ] || tcx "$NS_SWITCH" filter del dev "$pa" ingress prio $((1000 + m))
    tcx "$NS_SWITCH" filter add dev "$pa" ingress protocol ip prio $((1000 + m)) u32 match ip dst "$dst/32" \
      action mirred egress redirect dev "$tap"
    ;;
  esac
}

# delay_clear FROM TO: no delay on FROM -> TO (the frames held go on at once).
delay_clear() {
  local pa m out
  endpoint "$2"
  m=$EP_MINOR
  pa=$(ep_port "$1")
  if [ -n "$(tcq "$NS_SWITCH" filter show dev "$pa" ingress prio $((1000 + m)))" ]; then
    tcx "$NS_SWITCH" filter del dev "$pa" ingress prio $((1000 + m))
  fi
  if [ -n "$(ld_pid)" ] && [ -x "$LD_BIN" ]; then
    out=$(ld_ctl clear "dl-$pa-$(ep_port "$2")" 2>&1) || die "the delay stage: clear $1 -> $2: $out"
  fi
}

# delay_show FROM TO: "delay D[, jitter J]" and a line of counters when FROM -> TO is delayed;
# nothing when not.
delay_show() {
  local pa m tap f out
  endpoint "$2"
  m=$EP_MINOR
  pa=$(ep_port "$1")
  tap=dl-$pa-$(ep_port "$2")
  f=$(tcq "$NS_SWITCH" filter show dev "$pa" ingress prio $((1000 + m)))
  [ -n "$f" ] || return 0
  if [ -z "$(ld_pid)" ] || ! out=$(ld_ctl show "$tap" 2>/dev/null) || [ -z "$out" ]; then
    echo "DELAY STAGE GONE (linkdelay is not running or lost $tap: $1 -> $2 is dropped; set the delay again or --restore)"
    return 0
  fi
  awk '{
    for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    d = "delay " v["delay"]; if (v["jitter"] != "0s") d = d ", jitter " v["jitter"]
    print d
    printf "delay stage (linkdelay, tap %s): frames %s, bytes %s, dropped %s (queue full), queued %s (%s bytes)\n",
      $1, v["frames"], v["bytes"], v["dropped"], v["queued"], v["queued_bytes"]
  }' <<<"$out"
}

# classic BPF, on the Ethernet frame at A's egress: IPv4, destination DST, random draw < T
# -> the filter's class (dropped there); anything else: not this filter's.
loss_bytecode() {
  local dst=$1 t=$2 a b c d
  IFS=. read -r a b c d <<<"$dst"
  printf '8,40 0 0 12,21 0 5 2048,32 0 0 30,21 0 3 %u,32 0 0 4294963256,53 1 0 %u,6 0 0 4294967295,6 0 0 0' \
    $(((a << 24) | (b << 16) | (c << 8) | d)) "$t"
}

# dir_set FROM TO CUT: shape FROM -> TO with rate_b/delay_us/jitter_us/loss_t (CUT=1: drop all).
dir_set() {
  local from=$1 to=$2 cut=$3 ns dst m cls leaf lcls lleaf r burst q
  endpoint "$from"
  ns=$EP_NS
  endpoint "$to"
  dst=$EP_ADDR m=$EP_MINOR
  cls=1:$(hex "$m") leaf=$(hex $((0x1000 + m))): lcls=1:$(hex $((0x100 + m))) lleaf=$(hex $((0x2000 + m))):
  net_shape_root "$ns"
  r=${rate_b:-$NET_UNLIMITED}
  case "$r" in *bit) burst=16777216 ;; *) burst=$((r / 8 / 100)) ;; esac
  [ "$burst" -ge 131072 ] || burst=131072
  [ "$burst" -le 16777216 ] || burst=16777216
  case "$r" in *bit) ;; *) r=${r}bit ;; esac
  tcx "$ns" class replace dev "$NET_IF" parent 1: classid "$cls" htb rate "$r" ceil "$r" burst "${burst}b" cburst "${burst}b" quantum 60000
  if [ -n "$(tcq "$ns" qdisc show dev "$NET_IF" parent "$cls")" ]; then
    tcx "$ns" qdisc del dev "$NET_IF" parent "$cls"
  fi
  if [ "$cut" = 1 ]; then
    tcx "$ns" qdisc add dev "$NET_IF" parent "$cls" handle "$leaf" blackhole
  elif [ -n "$rate_b" ]; then
    # a router's buffer: 100 ms at the rate (a 10000-packet queue of 64 KiB GSO frames would
    # hold seconds at 40 MiB/s, and every RPC on the link would wait behind it)
    q=$((rate_b / 8 / 10))
    [ "$q" -ge 262144 ] || q=262144
    [ "$q" -le 67108864 ] || q=67108864
    tcx "$ns" qdisc add dev "$NET_IF" parent "$cls" handle "$leaf" bfifo limit "$q"
  else
    tcx "$ns" qdisc add dev "$NET_IF" parent "$cls" handle "$leaf" pfifo limit 10000
  fi
  # FROM -> TO into the class
  if [ -n "$(tcq "$ns" filter show dev "$NET_IF" parent 1: prio $((1000 + m)))" ]; then
    tcx "$ns" filter del dev "$NET_IF" parent 1: prio $((1000 + m))
  fi
  tcx "$ns" filter add dev "$NET_IF" parent 1: protocol ip prio $((1000 + m)) u32 match ip dst "$dst/32" flowid "$cls"
  # loss: a share of FROM -> TO into the loss class, ahead of the filter above
  if [ -n "$(tcq "$ns" filter show dev "$NET_IF" parent 1: prio "$m")" ]; then
    tcx "$ns" filter del dev "$NET_IF" parent 1: prio "$m"
  fi
  if [ -n "$loss_t" ] && [ "$cut" = 0 ]; then
    tcx "$ns" class replace dev "$NET_IF" parent 1: classid "$lcls" htb rate "$NET_UNLIMITED" ceil "$NET_UNLIMITED" burst 16777216b cburst 16777216b quantum 60000
    [ -n "$(tcq "$ns" qdisc show dev "$NET_IF" parent "$lcls")" ] ||
      tcx "$ns" qdisc add dev "$NET_IF" parent "$lcls" handle "$lleaf" blackhole
    tcx "$ns" filter add dev "$NET_IF" parent 1: protocol ip prio "$m" bpf bytecode "$(loss_bytecode "$dst" "$loss_t")" classid "$lcls"
  elif [ -n "$(tcq "$ns" class show dev "$NET_IF" classid "$lcls")" ]; then
    tcx "$ns" class del dev "$NET_IF" classid "$lcls"
  fi
  # delay and jitter: after the rate, in the switch
  if [ -n "$delay_us" ] && [ "$cut" = 0 ]; then
    delay_set "$from" "$to"
  else
    delay_clear "$from" "$to"
  fi
}

# dir_clear FROM TO: no shaping of FROM -> TO.
dir_clear() {
  local ns dst m c p
  endpoint "$1"
  ns=$EP_NS
  endpoint "$2"
  dst=$EP_ADDR m=$EP_MINOR
  for p in "$m" $((1000 + m)); do
    if [ -n "$(tcq "$ns" filter show dev "$NET_IF" parent 1: prio "$p")" ]; then
      tcx "$ns" filter del dev "$NET_IF" parent 1: prio "$p"
    fi
  done
  for c in "1:$(hex "$m")" "1:$(hex $((0x100 + m)))"; do
    if [ -n "$(tcq "$ns" class show dev "$NET_IF" classid "$c")" ]; then
      tcx "$ns" class del dev "$NET_IF" classid "$c"
    fi
  done
  delay_clear "$1" "$2"
}

# human_rate TC_RATE: tc's "167772Kbit" as MiB/s ("unlimited" at 100 Gbit/s).
human_rate() {
  awk -v r="$1" 'BEGIN {
    n = r + 0; u = r; sub(/^[0-9.]+/, "", u)
    m = (u == "Kbit") ? 1e3 : (u == "Mbit") ? 1e6 : (u == "Gbit") ? 1e9 : (u == "Tbit") ? 1e12 : 1
    b = n * m
    if (b >= 1e11) print "unlimited"
    else if (b >= 8 * 1048576) printf "%.1f MiB/s\n", b / 8 / 1048576
    else printf "%.1f KiB/s\n", b / 8 / 1024
  }'
}

# dir_show FROM TO [quiet]: the settings of FROM -> TO, then tc's statistics (quiet: nothing when unshaped).
dir_show() {
  local from=$1 to=$2 quiet=${3:-} ns src dst m cls lcls line leafl lossf parts=() r t dl
  endpoint "$from"
  ns=$EP_NS src=$EP_ADDR
  endpoint "$to"
  dst=$EP_ADDR m=$EP_MINOR
  cls=1:$(hex "$m") lcls=1:$(hex $((0x100 + m)))
  line=$(tcq "$ns" class show dev "$NET_IF" classid "$cls")
  dl=$(delay_show "$from" "$to")
  if [ -z "$line" ] && [ -z "$dl" ]; then
    [ -n "$quiet" ] || printf '%s -> %s (%s -> %s): unshaped\n' "$from" "$to" "$src" "$dst"
    return 0
  fi
  r=$(awk '{ for (i = 1; i < NF; i++) if ($i == "rate") { print $(i + 1); exit } }' <<<"$line")
  [ -z "$r" ] || r=$(human_rate "$r")
  leafl=$(tcq "$ns" qdisc show dev "$NET_IF" parent "$cls")
  case "$leafl" in
  *blackhole*) parts+=("CUT (everything dropped)") ;;
  *)
    [ -z "$r" ] || [ "$r" = unlimited ] || parts+=("rate $r")
    [ -z "$dl" ] || parts+=("$(head -n 1 <<<"$dl")")
    lossf=$(tcq "$ns" filter show dev "$NET_IF" parent 1: prio "$m")
    t=$(tr ",'" '\n\n' <<<"$lossf" | sed -n 's/^53 1 0 \([0-9]*\)$/\1/p')
    t=${t%%$'\n'*}
    [ -z "$t" ] || parts+=("loss $(awk -v t="$t" 'BEGIN { printf "%.4g%%", t / 42949672.96 }')")
    ;;
  esac
  [ ${#parts[@]} -gt 0 ] || parts=("unlimited (classified, nothing set)")
  printf '%s -> %s (%s -> %s): %s\n' "$from" "$to" "$src" "$dst" "$(printf '%s, ' "${parts[@]}" | sed 's/, $//')"
  {
    tcq "$ns" -s class show dev "$NET_IF" classid "$cls"
    tcq "$ns" -s qdisc show dev "$NET_IF" parent "$cls"
    if [ -n "$(tcq "$ns" class show dev "$NET_IF" classid "$lcls")" ]; then
      echo "loss (dropped by the random draw):"
      tcq "$ns" -s qdisc show dev "$NET_IF" parent "$lcls"
    fi
    sed -n '2,$p' <<<"$dl"
  } | sed '/^[[:space:]]*$/d; s/^/    /'
}

# --- do it -------------------------------------------------------------------------------------
if [ "$action" = show ]; then
  if [ ${#eps[@]} -eq 2 ]; then
    dir_show "${eps[0]}" "${eps[1]}"
    dir_show "${eps[1]}" "${eps[0]}"
  else
    all=(client)
    for i in $(lab_hosts); do
      ! net_ns_exists "$(host_ns "$i")" || all+=("host$i")
    done
    out=$(for a in "${all[@]}"; do
      for b in "${all[@]}"; do
        [ "$a" = "$b" ] || dir_show "$a" "$b" quiet
      done
    done)
    if [ -n "$out" ]; then printf '%s\n' "$out"; else echo "no shaped links in the lab at $ROOT"; fi
  fi
  exit 0
fi

exec 8>"$ROOT/.links.lock"
flock -w 60 8 || die "another lab-link.sh holds $ROOT/.links.lock"
a=${eps[0]} b=${eps[1]}
case "$action" in
set)
  dir_set "$a" "$b" 0
  [ "$both" = 0 ] || dir_set "$b" "$a" 0
  desc=()
  [ -z "$rate" ] || desc+=("rate $rate")
  [ -z "$delay" ] || desc+=("delay $delay${jitter:+ jitter $jitter}")
  [ -z "$loss" ] || desc+=("loss ${loss%\%}%")
  if [ "$both" = 1 ]; then arrow='<->'; else arrow='->'; fi
  say "$a $arrow $b: $(printf '%s, ' "${desc[@]}" | sed 's/, $//')"
  ;;
cut)
  dir_set "$a" "$b" 1
  dir_set "$b" "$a" 1
  say "$a <-> $b: cut (everything dropped both ways; --restore to undo)"
  ;;
restore)
  dir_clear "$a" "$b"
  dir_clear "$b" "$a"
  say "$a <-> $b: restored (unshaped)"
  ;;
esac
