# lab-common.sh: shared by lab-up.sh, lab-down.sh and lab-guest.sh (sourced, not run).
# The lab: N libvirt "hosts" on this machine, each a libvirtd+virtlogd pair in its own
# mount namespace with its own /etc/libvirt, /run/libvirt, /var/lib/libvirt,
# /var/log/libvirt and /var/cache/libvirt, listening on 127.0.10.N (DESIGN.md §8);
# with FERRY_LAB_LINKS=netns each also in its own network namespace (see below).

ROOT=${FERRY_LAB_ROOT:-/var/lib/ferry-lab}
CACHE=${FERRY_LAB_CACHE:-/var/cache/ferry-lab}
SHARED=$ROOT/shared
CONSOLE_DIR=$SHARED/console
# what each host bind-mounts over the system's libvirt directories
# (pki: the host's own certificates at libvirt's and QEMU's default paths, lab-pki.sh;
# rootssh: root's ssh identity and known_hosts for peer-to-peer migrations over ssh, lab-ssh.sh)
LAB_DIRS=(etc:/etc/libvirt run:/run/libvirt lib:/var/lib/libvirt log:/var/log/libvirt cache:/var/cache/libvirt pki:/etc/pki rootssh:/root/.ssh)

host_dir() { echo "$ROOT/hosts/host$1"; }
# FERRY_LAB_NET picks the /24 of loopback the lab lives in, so several labs
# (tests, bench) can run side by side without disturbing each other.
LAB_NET=${FERRY_LAB_NET:-127.0.10}

# lab_env_get FILE KEY: KEY's value in a KEY=value file ("" if none, or no such file).
lab_env_get() {
  [ -f "$1" ] || return 0
  sed -n "s/^$2=//p" "$1" 2>/dev/null | tail -n 1 || true
}

# lab_up_on_loopback: a host of the lab at $ROOT runs, and the lab has no emulated links.
lab_up_on_loopback() {
  local f p
  [ ! -s "$ROOT/links.env" ] || return 1
  for f in "$ROOT"/hosts/host*/run/libvirtd.pid; do
    p=$(cat "$f" 2>/dev/null) || continue
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = libvirtd ] && return 0
  done
  return 1
}

# Emulated links (FERRY_LAB_LINKS=netns, the default; hack/lab-net.sh): every host, a "client"
# and a "switch" get a network namespace of their own, the hosts and the client joined by veth
# pairs to a bridge in the switch, on a /24 that exists only inside those namespaces
# ($LINK_NET.i for host i, .250 for the client; shaped with hack/lab-link.sh). Unset: the mode of
# the lab already there ($ROOT/links.env, written by lab-up.sh in that mode, or its hosts running
# on loopback), else netns. Empty (FERRY_LAB_LINKS=) asks for the loopback lab: hosts on
# $LAB_NET.i in the machine's own network namespace, reachable without hack/lab-exec.sh.
if [ -n "${FERRY_LAB_LINKS+set}" ]; then
  LAB_LINKS=$FERRY_LAB_LINKS
elif [ -s "$ROOT/links.env" ]; then
  LAB_LINKS=$(lab_env_get "$ROOT/links.env" FERRY_LAB_LINKS)
elif lab_up_on_loopback; then
  LAB_LINKS=''
else
  LAB_LINKS=netns
fi
case "$LAB_LINKS" in
'' | loopback) LAB_LINKS='' ;;
netns) ;;
*) printf 'lab: FERRY_LAB_LINKS must be netns or empty, got %s\n' "'$LAB_LINKS'" >&2; exit 2 ;;
esac
# HOST_NET: the /24 the hosts are reached on (the loopback one, or the links' one in netns mode).
HOST_NET=$LAB_NET
if [ "$LAB_LINKS" = netns ]; then
  # Inside hack/lab-exec.sh FERRY_LAB_NET is the links' /24 (what the hosts are reached on
  # there) and FERRY_LAB_LO_NET the lab's own loopback /24, which names the lab.
  LAB_NET=${FERRY_LAB_LO_NET:-$LAB_NET}
  case "$LAB_NET" in
  127.[0-9]*.[0-9]*) ;;
  *) printf 'lab: FERRY_LAB_NET must be a loopback /24 (127.A.B) for FERRY_LAB_LINKS=netns, got %s\n' "'$LAB_NET'" >&2; exit 2 ;;
  esac
  # namespace names and the links' /24 follow the loopback /24, so two labs never collide
  NS_PREFIX=ferrylab-${LAB_NET//./-}
  NS_SWITCH=$NS_PREFIX-switch
  NS_CLIENT=$NS_PREFIX-client
  LINK_NET=${FERRY_LAB_LINK_NET:-10.${LAB_NET#127.}}
  case "$LINK_NET" in
  127.*) printf 'lab: FERRY_LAB_LINK_NET must not be loopback, got %s\n' "'$LINK_NET'" >&2; exit 2 ;;
  [0-9]*.[0-9]*.[0-9]*) ;;
  *) printf 'lab: FERRY_LAB_LINK_NET must be a /24 as A.B.C, got %s\n' "'$LINK_NET'" >&2; exit 2 ;;
  esac
  HOST_NET=$LINK_NET
  CLIENT_ADDR=$LINK_NET.250
fi
# host_ns i: host i's network namespace (netns mode).
host_ns() { echo "$NS_PREFIX-h$1"; }

host_addr() { echo "$HOST_NET.$1"; }
host_uri() { echo "qemu+tcp://$HOST_NET.$1/system"; }
# host_tls_uri i: host i over TLS with ferry's client certificate (lab-pki.sh)
host_tls_uri() { echo "qemu+tls://$HOST_NET.$1/system?pkipath=$ROOT/pki/ferry"; }
# host_ssh_uri i: host i over ssh (its own sshd, lab-ssh.sh) with ferry's key; command= is ferry's
# ssh wrapper with the lab's known_hosts (libvirt's ssh transport ignores known_hosts=)
LAB_SSH_PORT=2222
host_ssh_uri() {
  echo "qemu+ssh://root@$HOST_NET.$1:$LAB_SSH_PORT/system?keyfile=$ROOT/ssh/ferry_ed25519&command=$ROOT/ssh/ssh&proxy=native&no_tty=1"
}

# lab_hosts: the host numbers that have a directory in the lab, ascending.
lab_hosts() {
  local d
  for d in "$ROOT"/hosts/host*; do
    [ -d "$d" ] || continue
    d=${d##*/host}
    case "$d" in '' | *[!0-9]*) continue ;; esac
    echo "$d"
  done | sort -n
}

# live_pid FILE COMM: the PID in FILE if that process is alive and is COMM
# (guards against a stale pid file whose PID was reused); prints nothing otherwise.
live_pid() {
  local pid comm
  [ -s "$1" ] || return 0
  pid=$(head -c 32 "$1" 2>/dev/null | tr -d '[:space:]') # libvirt writes no newline
  case "$pid" in '' | *[!0-9]*) return 0 ;; esac
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 0
  alive "$pid" || return 0
  case "$comm" in "$2"*) echo "$pid" ;; esac
}

# alive PID: the process exists and is not a zombie (PID 1 here may be slow to reap orphans).
alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [ "${st%% *}" != Z ]
}

# stop_pid PID WHAT [SECONDS]: SIGTERM, wait for exit, SIGKILL after the deadline.
stop_pid() {
  local pid=$1 what=$2 secs=${3:-15} end
  kill -TERM "$pid" 2>/dev/null || return 0
  end=$((SECONDS + secs))
  while alive "$pid"; do
    if [ "$SECONDS" -ge "$end" ]; then
      say "$what (pid $pid) did not exit after ${secs}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      end=$((SECONDS + 5))
      while alive "$pid" && [ "$SECONDS" -lt "$end" ]; do sleep 0.1; done
      alive "$pid" && { say "$what (pid $pid) survived SIGKILL"; return 1; }
      return 0
    fi
    sleep 0.1
  done
}

# lab_in_client: this process runs in the lab's client network namespace (netns mode).
lab_in_client() {
  [ "$LAB_LINKS" = netns ] || return 1
  if [ -z "${LAB_IN_CLIENT_:-}" ]; then
    local self ns
    self=$(stat -L -c %i /proc/self/ns/net 2>/dev/null) || self=none
    ns=$(stat -L -c %i "/run/netns/$NS_CLIENT" 2>/dev/null) || ns=missing
    if [ "$self" = "$ns" ]; then LAB_IN_CLIENT_=1; else LAB_IN_CLIENT_=0; fi
  fi
  [ "$LAB_IN_CLIENT_" = 1 ]
}

# in_client CMD...: CMD where the hosts can be reached: in netns mode in the lab's client
# namespace (unless already there), else right here. Never from the machine's own namespace in
# netns mode: the links' /24 is not there, and its default route would carry the traffic away.
in_client() {
  if [ "$LAB_LINKS" = netns ] && ! lab_in_client; then
    if [ ! -e "/run/netns/$NS_CLIENT" ]; then
      printf 'lab: the client namespace %s is missing (is the lab at %s up?): not running %s\n' "$NS_CLIENT" "$ROOT" "$*" >&2
      return 125
    fi
    ip netns exec "$NS_CLIENT" "$@"
  else
    "$@"
  fi
}

# With emulated links a plain `virsh` in a script that sources this file (lab-guest.sh, the bench
# scripts) runs in the lab's client namespace too: the hosts' addresses are not in the machine's.
if [ "$LAB_LINKS" = netns ]; then
  virsh() {
    if lab_in_client; then command virsh "$@"; else in_client virsh "$@"; fi
  }
fi

# vsh N ARGS...: virsh against host N, bounded in time.
vsh() {
  local n=$1
  shift
  in_client timeout 60 virsh -q -c "$(host_uri "$n")" "$@"
}
