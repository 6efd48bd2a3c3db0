# lab-net.sh: the lab's emulated links, FERRY_LAB_LINKS=netns (sourced by lab-up.sh, lab-down.sh
# and lab-link.sh after lab-common.sh; needs iproute2's ip and tc, and say/die).
#
#   $NS_PREFIX-switch   a bridge br0, with one port per host (h1, h2, ...) and one for the client
#   $NS_PREFIX-client   where ferry, the tests and virsh run (hack/lab-exec.sh): lab0 = $LINK_NET.250
#   $NS_PREFIX-hi       host i's libvirtd, virtlogd, sshd and QEMUs: lab0 = $LINK_NET.i
#   ($NS_PREFIX is ferrylab-127-0-10 for FERRY_LAB_NET=127.0.10, $LINK_NET then 10.0.10.)
# Each lab0 is one end of a veth pair whose other end is the port on the bridge. The /24 exists
# only inside these namespaces: no address, route or bridge is added to the machine's own
# network namespace, and no namespace has a route anywhere else. IPv6 is off in all of them.
#
# Shaping (hack/lab-link.sh) is on each endpoint's lab0 egress: an HTB root (handle 1:, unclassified
# traffic goes out unshaped) and, per shaped peer P with minor m (P's host number, 250 for the client):
#   class 1:m              HTB, rate = ceil = the bandwidth (100gbit when only other settings are set)
#     leaf qdisc 0x1000+m: pfifo, or blackhole (a cut: everything dropped)
#   filter prio 1000+m     u32 match ip dst P -> 1:m
#   loss: class 1:0x100+m (leaf blackhole 0x2000+m) and filter prio m, classic BPF: ip dst P and a
#     random draw under the loss rate -> 1:0x100+m (netem is not in every kernel; this draw is)
# (class minors and qdisc handles are hex for tc: host2 is 1:2, the client 1:fa, its leaf 10fa:.)
# Delay and jitter are in the switch, after the rate: the userspace delay stage hack/linkdelay
# (this machine's kernel has neither netem nor fq), see hack/lab-link.sh.
#
# $ROOT/links.env records the mode and every namespace made, as soon as it is made; lab-down.sh
# deletes those (by name, once no process is left in them) and then the file.

LINKS_ENV=$ROOT/links.env
NET_IF=lab0
NET_BR=br0
NET_UNLIMITED=100gbit

# net_ns_exists NAME
net_ns_exists() { [ -e "/run/netns/$1" ]; }

# net_record NAME: add NAME to the namespaces this lab made ($LINKS_ENV).
net_record() {
  local made
  made=$(lab_env_get "$LINKS_ENV" FERRY_LAB_NETNS)
  case ",$made," in *",$1,"*) return 0 ;; esac
  [ -n "$made" ] && made="$made,$1" || made=$1
  net_write_links_env "$made"
}

net_write_links_env() {
  cat >"$LINKS_ENV.tmp" <<EOF
# written by hack/lab-up.sh: this lab runs with emulated links; hack/lab-down.sh removes what is named here
FERRY_LAB_LINKS=netns
FERRY_LAB_NET=$LAB_NET
FERRY_LAB_LINK_NET=$LINK_NET
FERRY_LAB_NETNS_PREFIX=$NS_PREFIX
FERRY_LAB_NETNS=$1
EOF
  mv "$LINKS_ENV.tmp" "$LINKS_ENV"
}

# net_made: the namespaces this lab made, one a line.
net_made() { lab_env_get "$LINKS_ENV" FERRY_LAB_NETNS | tr ',' '\n' | grep -v '^$' || true; }

# net_ns_ensure NAME: the namespace, with lo up and IPv6 off.
net_ns_ensure() {
  local ns=$1 made
  made=$(lab_env_get "$LINKS_ENV" FERRY_LAB_NETNS)
  if ! net_ns_exists "$ns"; then
    say "making network namespace $ns"
    ip netns add "$ns" || die "ip netns add $ns failed"
    net_record "$ns"
  else
    case ",$made," in
    *",$ns,"*) ;;
    *) die "network namespace $ns exists but this lab did not make it (it is not in $LINKS_ENV): remove it, or pick another FERRY_LAB_NET" ;;
    esac
  fi
  ip -n "$ns" link set lo up || die "$ns: cannot bring lo up"
  # before any veth appears here, so none gets an IPv6 link-local address either
  ip netns exec "$ns" sh -c 'for f in /proc/sys/net/ipv6/conf/all/disable_ipv6 /proc/sys/net/ipv6/conf/default/disable_ipv6; do [ ! -e "$f" ] || echo 1 >"$f"; done' ||
    die "$ns: cannot turn IPv6 off"
}

# net_endpoint NS PORT ADDR: NS's lab0 (ADDR/24) paired with the bridge port PORT in the switch.
net_endpoint() {
  local ns=$1 port=$2 addr=$3
  net_ns_ensure "$ns"
  if ! ip -n "$ns" link show "$NET_IF" >/dev/null 2>&1 || ! ip -n "$NS_SWITCH" link show "$port" >/dev/null 2>&1; then
    # half a pair cannot be (deleting one end deletes both), but be sure
    ip -n "$ns" link del "$NET_IF" >/dev/null 2>&1 || true
    ip -n "$NS_SWITCH" link del "$port" >/dev/null 2>&1 || true
    ip -n "$NS_SWITCH" link add name "$port" type veth peer name "$NET_IF" netns "$ns" ||
      die "cannot make the veth pair $NS_SWITCH:$port - $ns:$NET_IF"
  fi
  ip -n "$NS_SWITCH" link set "$port" master "$NET_BR" up || die "$NS_SWITCH: cannot put $port on $NET_BR"
  ip -n "$ns" addr replace "$addr/24" dev "$NET_IF" || die "$ns: cannot give $NET_IF $addr/24"
  ip -n "$ns" link set "$NET_IF" up || die "$ns: cannot bring $NET_IF up"
  net_shape_root "$ns"
}

# net_shape_root NS: the HTB root on NS's lab0 (kept if there: it holds lab-link.sh's classes).
net_shape_root() {
  local root
  root=$(ip netns exec "$1" tc qdisc show dev "$NET_IF" root 2>&1) || die "$1: tc qdisc show dev $NET_IF: $root"
  case "$root" in
  "qdisc htb 1: root"*) ;;
  *)
    ip netns exec "$1" tc qdisc replace dev "$NET_IF" root handle 1: htb default 0 ||
      die "$1: cannot put an HTB root on $NET_IF"
    ;;
  esac
}

# net_up N: the switch, the client and hosts 1..N (re-runnable: what is there is kept).
net_up() {
  local n=$1 i
  command -v ip >/dev/null && command -v tc >/dev/null || die "FERRY_LAB_LINKS=netns needs ip and tc (iproute2)"
  [ -s "$LINKS_ENV" ] || net_write_links_env ""
  net_ns_ensure "$NS_SWITCH"
  # bridged frames skip the switch's (empty) netfilter hooks
  ip netns exec "$NS_SWITCH" sh -c 'f=/proc/sys/net/bridge/bridge-nf-call-iptables; [ ! -e "$f" ] || echo 0 >"$f"' || true
  if ! ip -n "$NS_SWITCH" link show "$NET_BR" >/dev/null 2>&1; then
    ip -n "$NS_SWITCH" link add name "$NET_BR" type bridge stp_state 0 || die "$NS_SWITCH: cannot make bridge $NET_BR"
  fi
  ip -n "$NS_SWITCH" link set "$NET_BR" up || die "$NS_SWITCH: cannot bring $NET_BR up"
  net_endpoint "$NS_CLIENT" client "$CLIENT_ADDR"
  for i in $(seq 1 "$n"); do
    net_endpoint "$(host_ns "$i")" "h$i" "$(host_addr "$i")"
  done
}

# net_delay_stop: stop hack/lab-link.sh's delay stage (hack/linkdelay, in the switch namespace) by
# its pid file (SIGTERM: it releases the frames it holds and its taps go with it); if it will not
# go, it is added to the caller's array left.
net_delay_stop() {
  local pid
  pid=$(live_pid "$ROOT/run/linkdelay.pid" linkdelay)
  [ -n "$pid" ] || return 0
  if stop_pid "$pid" "the delay stage linkdelay" 10; then
    say "stopped the delay stage (linkdelay pid $pid)"
    rm -f "$ROOT/run/linkdelay.pid" "$ROOT/run/linkdelay.sock"
  else
    left+=("linkdelay $pid")
  fi
}

# net_down: stop the delay stage, then delete the namespaces this lab made, by name: hosts first,
# then the client, then the switch (each with its end of the veth pairs and the switch with the
# bridge). A namespace that still holds a process is left alone, reported and added to the
# caller's array left.
net_down() {
  local ns pids port made sw='' order=() kept=0
  net_delay_stop
  [ -s "$LINKS_ENV" ] || return 0
  made=$(net_made)
  for ns in $made; do
    case "$ns" in *-h[0-9]*) order+=("$ns") ;; esac
  done
  for ns in $made; do
    case "$ns" in *-client) order+=("$ns") ;; esac
  done
  for ns in $made; do
    case "$ns" in *-switch) order+=("$ns") sw=$ns ;; esac
  done
  for ns in "${order[@]}"; do
    net_ns_exists "$ns" || continue
    pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    if [ -n "${pids// /}" ]; then
      say "network namespace $ns still holds processes: $(for p in $pids; do printf '%s(%s) ' "$p" "$(cat "/proc/$p/comm" 2>/dev/null)"; done)- left alone"
      left+=("netns $ns")
      kept=1
      continue
    fi
    case "$ns" in
    *-switch) port='' ; ip -n "$ns" link del "$NET_BR" >/dev/null 2>&1 || true ;;
    *-client) port=client ;;
    *) port=h${ns##*-h} ;;
    esac
    if [ -n "$port" ] && [ -n "$sw" ] && net_ns_exists "$sw"; then
      ip -n "$sw" link del "$port" >/dev/null 2>&1 || true
    fi
    if ip netns del "$ns"; then
      say "deleted network namespace $ns"
    else
      left+=("netns $ns")
      kept=1
    fi
  done
  [ "$kept" = 1 ] || rm -f "$LINKS_ENV"
}
