# lab-common.sh: shared by lab-up.sh, lab-down.sh and lab-guest.sh (sourced, not run).
# The lab: N libvirt "hosts" on this machine, each a libvirtd+virtlogd pair in its own
# mount namespace with its own /etc/libvirt, /run/libvirt, /var/lib/libvirt,
# /var/log/libvirt and /var/cache/libvirt, listening on 127.0.10.N (DESIGN.md §8).

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
host_addr() { echo "$LAB_NET.$1"; }
host_uri() { echo "qemu+tcp://$LAB_NET.$1/system"; }
# host_tls_uri i: host i over TLS with ferry's client certificate (lab-pki.sh)
host_tls_uri() { echo "qemu+tls://$LAB_NET.$1/system?pkipath=$ROOT/pki/ferry"; }
# host_ssh_uri i: host i over ssh (its own sshd, lab-ssh.sh) with ferry's key; command= is ferry's
# ssh wrapper with the lab's known_hosts (libvirt's ssh transport ignores known_hosts=)
LAB_SSH_PORT=2222
host_ssh_uri() {
  echo "qemu+ssh://root@$LAB_NET.$1:$LAB_SSH_PORT/system?keyfile=$ROOT/ssh/ferry_ed25519&command=$ROOT/ssh/ssh&proxy=native&no_tty=1"
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

# vsh N ARGS...: virsh against host N, bounded in time.
vsh() {
  local n=$1
  shift
  timeout 60 virsh -q -c "$(host_uri "$n")" "$@"
}
