#!/usr/bin/env bash
# lab-up.sh [N]: bring up an N-host libvirt lab on this machine (N: argument, else $FERRY_LAB_HOSTS,
# else the size of the lab already there, else 2).
#
#   host i = libvirtd + virtlogd in a private mount namespace whose /etc/libvirt, /run/libvirt,
#            /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt are $FERRY_LAB_ROOT/hosts/hosti/*,
#            listening on qemu+tcp://127.0.10.i/system and qemu+tls (lab-pki.sh: a lab CA, each
#            host's certificates at /etc/pki in its namespace), migrating over tcp://127.0.10.i
#            (with QEMU's migration TLS when asked),
#            with a `default` dir pool on its own /var/lib/libvirt/images,
#            and its own sshd on 127.0.10.i:2222 in its namespace (lab-ssh.sh: qemu+ssh; its
#            libvirtd's /root/.ssh is hosts/hosti/rootssh, for peer-to-peer migrations over ssh).
#   $FERRY_LAB_ROOT/shared        same path on every host (shared storage); shared/console: guest serial logs
#   $FERRY_LAB_ROOT/ferry.yaml    ferry inventory of the N hosts over TLS (ferry-tcp.yaml: plain TCP,
#                                 ferry-plain.yaml: plain TCP and no migration TLS, ferry-ssh.yaml:
#                                 qemu+ssh://root@127.0.10.i:2222 with ferry's key $FERRY_LAB_ROOT/ssh)
#   $FERRY_LAB_ROOT/lab.env       FERRY_CONFIG, FERRY_LAB_ROOT, FERRY_LAB_HOSTS, ... (KEY=value lines)
#
# FERRY_LAB_LINKS=netns (the default): emulated links (hack/lab-net.sh). Host i also gets a network namespace of
# its own, ferrylab-127-0-10-hi (named after FERRY_LAB_NET), whose only link is a veth to a
# bridge in ferrylab-127-0-10-switch; every address above is then 10.0.10.i (FERRY_LAB_LINK_NET,
# default 10.A.B for FERRY_LAB_NET=127.A.B), which exists only inside the lab's namespaces. ferry,
# the tests and virsh reach the hosts from ferrylab-127-0-10-client (10.0.10.250) through
# hack/lab-exec.sh; hack/lab-link.sh shapes the links (bandwidth, delay, loss, cuts).
# lab.env then also holds FERRY_LAB_LINKS and the namespaces; $FERRY_LAB_ROOT/links.env lists what
# hack/lab-down.sh removes. Unset, FERRY_LAB_LINKS keeps the mode of the lab already there (else
# netns); FERRY_LAB_LINKS= (empty) is the loopback lab: hosts on 127.0.10.i in the machine's own
# network namespace, no shaping.
#
# Re-runnable: hosts that are up are left alone, dead ones are restarted, and a libvirtd that runs
# but does not answer within 15 s is stopped (its stacks kept in its log directory) and restarted. Exit 0 only if all N answer.
# Needs the packages of hack/install-deps.sh. Stop with hack/lab-down.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
say() { printf '[lab-up] %s\n' "$*" >&2; }
die() { printf '[lab-up] ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lab-common.sh
. "$HERE/lab-common.sh"
# shellcheck source=lab-pki.sh
. "$HERE/lab-pki.sh"
# shellcheck source=lab-ssh.sh
. "$HERE/lab-ssh.sh"
# shellcheck source=lab-net.sh
. "$HERE/lab-net.sh"

# N: the argument, else $FERRY_LAB_HOSTS, else the size of the lab already there (so a bare
# re-run that restarts a killed host keeps a 3-host inventory at 3), else 2.
prev=$(sed -n 's/^FERRY_LAB_HOSTS=\([0-9][0-9]*\)$/\1/p' "$ROOT/lab.env" 2>/dev/null || true)
N=${1:-${FERRY_LAB_HOSTS:-${prev:-2}}}
case "$N" in '' | *[!0-9]*) die "usage: lab-up.sh [N]  (N = number of hosts, 1..50; got '$N')" ;; esac
[ "$N" -ge 1 ] && [ "$N" -le 50 ] || die "number of hosts must be 1..50, got $N"
[ "$(id -u)" = 0 ] || die "must run as root"

# --- prerequisites -----------------------------------------------------------------------
missing=()
for c in libvirtd virtlogd virsh qemu-system-x86_64 unshare nsenter cpio timeout flock openssl ssh ssh-keygen virt-ssh-helper; do
  command -v "$c" >/dev/null || missing+=("$c")
done
for so in libvirt_driver_qemu.so libvirt_driver_storage.so; do
  compgen -G "/usr/lib/*/libvirt/connection-driver/$so" >/dev/null || missing+=("$so")
done
[ -x /usr/sbin/sshd ] || missing+=("/usr/sbin/sshd (openssh-server)")
if [ "$LAB_LINKS" = netns ]; then
  for c in ip tc stat; do command -v "$c" >/dev/null || missing+=("$c (FERRY_LAB_LINKS=netns)"); done
fi
getent passwd libvirt-qemu >/dev/null || missing+=("user libvirt-qemu")
getent group kvm >/dev/null || missing+=("group kvm")
[ -s "$CACHE/vmlinuz" ] || missing+=("guest kernel $CACHE/vmlinuz")
[ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]}; run hack/install-deps.sh first"
v=$(libvirtd --version | awk '{print $NF}')
case "$v" in 1[1-9].*) ;; *) die "libvirtd $v is too old for the lab (want 11+ from bookworm-backports); run hack/install-deps.sh" ;; esac

mkdir -p "$ROOT/hosts" "$CONSOLE_DIR"
exec 9>"$ROOT/.lock"
flock -w 300 9 || die "another lab-up/lab-down holds $ROOT/.lock"

# A lab does not change its links under running hosts: they listen where they were started.
if [ "$LAB_LINKS" = netns ]; then
  if [ ! -s "$ROOT/links.env" ]; then
    for i in $(lab_hosts); do
      [ -z "$(live_pid "$(host_dir "$i")/run/libvirtd.pid" libvirtd)$(live_pid "$(host_dir "$i")/run/virtlogd.pid" virtlogd)" ] ||
        die "the lab at $ROOT runs on loopback ($LAB_NET.x, host$i is up); hack/lab-down.sh it before FERRY_LAB_LINKS=netns"
    done
  else
    was=$(lab_env_get "$ROOT/links.env" FERRY_LAB_LINK_NET)
    [ "$was" = "$LINK_NET" ] ||
      die "the lab at $ROOT has its links on $was.x, not $LINK_NET.x (FERRY_LAB_LINK_NET); hack/lab-down.sh it first"
  fi
elif [ -s "$ROOT/links.env" ]; then
  die "the lab at $ROOT runs with emulated links ($ROOT/links.env); hack/lab-down.sh it first, or set FERRY_LAB_LINKS=netns"
fi

# The pristine /etc/libvirt every host's etc is seeded from. It must be the machine's own
# directory, not a host's bind mount leaked into this namespace.
if awk '$5 == "/etc/libvirt" {f=1} END {exit !f}' /proc/self/mountinfo; then
  die "/etc/libvirt is a mount point in this namespace (leaked lab mount?); run hack/lab-down.sh"
fi
if [ ! -d "$ROOT/pristine/etc-libvirt" ]; then
  say "saving a pristine copy of /etc/libvirt in $ROOT/pristine/etc-libvirt"
  rm -rf "$ROOT/pristine.tmp"
  mkdir -p "$ROOT/pristine.tmp"
  cp -a /etc/libvirt "$ROOT/pristine.tmp/etc-libvirt"
  mkdir -p "$ROOT/pristine"
  mv "$ROOT/pristine.tmp/etc-libvirt" "$ROOT/pristine/etc-libvirt"
  rmdir "$ROOT/pristine.tmp"
fi

say "guest initramfs: $("$HERE/guest/build.sh" 9>&-)"
# each host bind-mounts its own /etc/pki and /root/.ssh over these
mkdir -p /etc/pki
mkdir -p -m 700 /root/.ssh
pki_ca
pki_ferry
ssh_ferry

if [ "$LAB_LINKS" = netns ]; then
  net_up "$N"
  say "links: hosts on $LINK_NET.1-$N, client $CLIENT_ADDR in $NS_CLIENT, bridge in $NS_SWITCH (hack/lab-link.sh shapes them)"
fi

# --- per host ----------------------------------------------------------------------------
write_config() {
  local i=$1 H addr pmin
  H=$(host_dir "$i")
  addr=$(host_addr "$i")
  mkdir -p "$H"/{run,lib/images,log,cache}
  pki_host "$i"
  ssh_host "$i"
  if [ ! -e "$H/.etc-seeded" ]; then
    rm -rf "$H/etc"
    cp -a "$ROOT/pristine/etc-libvirt" "$H/etc"
    touch "$H/.etc-seeded"
  fi
  [ -s "$H/host-uuid" ] || cat /proc/sys/kernel/random/uuid >"$H/host-uuid"
  pmin=$((49152 + (i - 1) * 64))
  cat >"$H/etc/libvirtd.conf" <<EOF
# written by hack/lab-up.sh: ferry lab host$i
# TLS (port 16514) with the lab's certificates at libvirt's default paths (lab-pki.sh); plain
# TCP stays for the lab's own tools
listen_tls = 1
listen_tcp = 1
listen_addr = "$addr"
auth_tls = "none"
auth_tcp = "none"
auth_unix_ro = "none"
auth_unix_rw = "none"
host_uuid = "$(cat "$H/host-uuid")"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
keepalive_interval = 5
keepalive_count = 5
EOF
  cat >"$H/etc/virtlogd.conf" <<EOF
# written by hack/lab-up.sh: ferry lab host$i
log_outputs = "3:file:/var/log/libvirt/virtlogd.log"
# With stdio_handler = "logd" libvirt routes <serial type='file'> through virtlogd as well:
# never roll the guests' console logs over (the default 2 MiB is ~2 h of heartbeats).
max_size = 0
EOF
  cat >"$H/etc/qemu.conf" <<EOF
# written by hack/lab-up.sh: ferry lab host$i
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
# every host of the lab runs on this machine: cgroups named after the domain (qemu-ID-NAME)
# would be shared by a source and its migration destination; the lab does not need them.
cgroup_controllers = [ ]
migration_address = "$addr"
migration_host = "$addr"
migration_port_min = $pmin
migration_port_max = $((pmin + 63))
vnc_listen = "$addr"
spice_listen = "$addr"
remote_display_port_min = $((5900 + (i - 1) * 64))
remote_display_port_max = $((5900 + (i - 1) * 64 + 63))
websocket_port_min = $((5700 + (i - 1) * 2))
websocket_port_max = $((5700 + (i - 1) * 2 + 1))
# qemu's stdout/stderr go to virtlogd -> /var/log/libvirt/qemu/NAME.log (this host's log dir)
stdio_handler = "logd"
# migration TLS from the default directory, /etc/pki/qemu (lab-pki.sh): each side checks the other
migrate_tls_x509_verify = 1
EOF
}

# start_host i: start whatever of virtlogd/libvirtd is not running, in this host's namespace.
start_host() {
  local i=$1 H lpid vpid pre=() nsflags=(-m) where=''
  H=$(host_dir "$i")
  if [ "$LAB_LINKS" = netns ]; then
    # its network namespace too: QEMU inherits it, sshd joins it (lab-ssh.sh)
    pre=(ip netns exec "$(host_ns "$i")")
    nsflags=(-m -n)
    where=" and network namespace $(host_ns "$i")"
  fi
  lpid=$(live_pid "$H/run/libvirtd.pid" libvirtd)
  vpid=$(live_pid "$H/run/virtlogd.pid" virtlogd)
  [ -n "$lpid" ] && [ -n "$vpid" ] && return 0
  local d
  for d in "${LAB_DIRS[@]}"; do mkdir -p "${d#*:}"; done
  : >"$H/log/daemon-stderr.log"
  if [ -n "$lpid" ] || [ -n "$vpid" ]; then
    # one daemon lives: join its namespace so both share the host's mounts
    local ns=${lpid:-$vpid}
    if [ -z "$vpid" ]; then
      say "host$i: virtlogd is down, starting it in the namespace of libvirtd $lpid (running guests lost their console output)"
      nsenter -t "$ns" "${nsflags[@]}" -- virtlogd -d -p /run/libvirt/virtlogd.pid </dev/null >/dev/null 2>>"$H/log/daemon-stderr.log" 9>&- || return 1
    else
      say "host$i: libvirtd is down, starting it in the namespace of virtlogd $vpid"
      nsenter -t "$ns" "${nsflags[@]}" -- libvirtd -d --listen -p /run/libvirt/libvirtd.pid </dev/null >/dev/null 2>>"$H/log/daemon-stderr.log" 9>&- || return 1
    fi
    return 0
  fi
  say "host$i: starting virtlogd and libvirtd on $(host_addr "$i") in a new mount namespace$where"
  # run/ is a tmpfs on a real host: start from an empty one, unless a guest of this host still
  # runs (its daemons were killed): then libvirtd needs run/qemu/NAME.xml to reconnect to it.
  local pf guests=''
  for pf in "$H"/run/qemu/*.pid; do
    [ -e "$pf" ] && [ -n "$(live_pid "$pf" qemu-system)" ] && guests="$guests $(basename "$pf" .pid)"
  done
  if [ -n "$guests" ]; then
    say "host$i: guests still running without their libvirtd:$guests (libvirtd reconnects to them;"
    say "host$i: their serial consoles went through the dead virtlogd: no console output until restarted or migrated)"
  else
    find "$H/run" -mindepth 1 -delete 2>/dev/null || true
  fi
  "${pre[@]}" unshare -m --propagation private -- /bin/sh -eu -c '
    H=$1; shift
    for d in "$@"; do mount --bind "$H/${d%%:*}" "${d#*:}"; done
    virtlogd -d -p /run/libvirt/virtlogd.pid
    libvirtd -d --listen -p /run/libvirt/libvirtd.pid
  ' sh "$H" "${LAB_DIRS[@]}" </dev/null >/dev/null 2>>"$H/log/daemon-stderr.log" 9>&-
}

# wait_host i SECONDS: until virsh answers over TCP; fails early if libvirtd died.
wait_host() {
  local i=$1 end=$((SECONDS + $2)) H
  H=$(host_dir "$i")
  while :; do
    if in_client timeout 10 virsh -c "$(host_uri "$i")" version >/dev/null 2>&1; then return 0; fi
    [ -n "$(live_pid "$H/run/libvirtd.pid" libvirtd)" ] || { sleep 0.5; [ -n "$(live_pid "$H/run/libvirtd.pid" libvirtd)" ] || { say "host$i: libvirtd is not running"; return 1; }; }
    [ "$SECONDS" -lt "$end" ] || { say "host$i: no answer on $(host_uri "$i") after $2 s"; return 1; }
    sleep 0.2
  done
}

ensure_pool() {
  local i=$1 state
  if ! vsh "$i" pool-info default >/dev/null 2>&1; then
    say "host$i: defining storage pool default (dir /var/lib/libvirt/images)"
    vsh "$i" pool-define-as default dir --target /var/lib/libvirt/images >/dev/null || return 1
  fi
  state=$(vsh "$i" pool-info default | awk '$1 == "State:" {print $2}')
  if [ "$state" != running ]; then
    vsh "$i" pool-start default >/dev/null || return 1
  fi
  vsh "$i" pool-autostart default >/dev/null || return 1
}

fail_report() {
  local i=$1 H f
  H=$(host_dir "$i")
  say "host$i: FAILED"
  f=$H/log/daemon-stderr.log
  if [ -s "$f" ]; then
    say "host$i: tail of $f:"
    tail -n 5 "$f" | sed 's/^/    /' >&2
  fi
  f=$H/log/libvirtd.log
  if [ -s "$f" ]; then
    # the last start only, without the noise every start logs on this machine (no KVM, no SMBIOS)
    say "host$i: tail of $f (last start, /dev/kvm and dmidecode noise left out):"
    awk '/ info : libvirt version: / {n = 0} {l[n++] = $0} END {for (k = 0; k < n; k++) print l[k]}' "$f" |
      grep -v -e '/dev/kvm' -e 'dmidecode' -e '^$' | tail -n 20 | sed 's/^/    /' >&2
  fi
}

# unhang i: host i's libvirtd runs but does not answer: keep its threads' stacks for the record
# and stop it (its guests keep running; start_host restarts it next to its virtlogd). libvirtd
# 11.3 can deadlock its main thread closing a client killed in the middle of a volume stream
# over TLS (a crash of `ferry migrate --cold`; the lab's e2e does exactly that): a daemon that
# hangs so is no use to anyone.
unhang() {
  local i=$1 H pid bt
  H=$(host_dir "$i")
  pid=$(live_pid "$H/run/libvirtd.pid" libvirtd)
  [ -n "$pid" ] || return 0
  in_client timeout 15 virsh -c "$(host_uri "$i")" version >/dev/null 2>&1 && return 0
  bt=$H/log/libvirtd-hung-$(date -u +%Y%m%dT%H%M%SZ).txt
  if command -v gdb >/dev/null; then
    timeout 60 gdb -p "$pid" -batch -ex 'thread apply all bt 20' >"$bt" 2>&1 || true
  fi
  say "host$i: libvirtd $pid is alive but has not answered for 15 s: stopping it (thread stacks: $bt)"
  stop_pid "$pid" "host$i libvirtd" 3 || return 1
}

failed=()
declare -A was_up=()
for i in $(seq 1 "$N"); do
  write_config "$i"
  H=$(host_dir "$i")
  unhang "$i" || say "host$i: the hung libvirtd could not be stopped"
  if [ -n "$(live_pid "$H/run/libvirtd.pid" libvirtd)" ] && [ -n "$(live_pid "$H/run/virtlogd.pid" virtlogd)" ]; then
    was_up[$i]=1
  fi
  ssh_stale "$i"
  start_host "$i" || { say "host$i: starting the daemons failed"; }
done
ssh_trust "$N"
for i in $(seq 1 "$N"); do
  if wait_host "$i" 90 && ensure_pool "$i" && ssh_start "$i" && ssh_check "$i"; then
    H=$(host_dir "$i")
    if [ -n "${was_up[$i]:-}" ]; then st="already up, left alone"; else st="up"; fi
    say "host$i: $st: $(host_uri "$i") libvirtd pid $(live_pid "$H/run/libvirtd.pid" libvirtd), virtlogd pid $(live_pid "$H/run/virtlogd.pid" virtlogd), sshd pid $(live_pid "$H/run/sshd.pid" sshd) on $(host_addr "$i"):$LAB_SSH_PORT"
  else
    fail_report "$i"
    failed+=("host$i")
  fi
done
for i in $(lab_hosts); do
  [ "$i" -le "$N" ] && continue
  [ -n "$(live_pid "$(host_dir "$i")/run/libvirtd.pid" libvirtd)" ] &&
    say "host$i: running but not in the inventory of $N hosts (hack/lab-down.sh stops it)"
done

# --- inventory -----------------------------------------------------------------------------
# ferry.yaml reaches every host over TLS and migrates with TLS when both hosts can (the
# default, preferred); ferry-tcp.yaml reaches them over plain TCP, the same otherwise;
# ferry-plain.yaml is plain TCP without migration TLS (what virsh does without --tls: the
# benchmarks' baseline); ferry-ssh.yaml reaches them over qemu+ssh (lab-ssh.sh), migrating with
# TLS like ferry.yaml.
write_inventory() {
  local file=$1 uri=$2 extra=${3:-} i
  {
    echo "# ferry lab inventory, written by hack/lab-up.sh"
    echo "hosts:"
    for i in $(seq 1 "$N"); do
      printf '  - name: host%d\n    uri: %s\n    migration_address: %s\n    labels: {lab: "true"}\n' \
        "$i" "$($uri "$i")" "$(host_addr "$i")"
      [ -z "$extra" ] || printf '    %s\n' "$extra"
    done
  } >"$file.tmp"
  mv "$file.tmp" "$file"
}
write_inventory "$ROOT/ferry.yaml" host_tls_uri
write_inventory "$ROOT/ferry-tcp.yaml" host_uri
write_inventory "$ROOT/ferry-plain.yaml" host_uri "migration_tls: off"
write_inventory "$ROOT/ferry-ssh.yaml" host_ssh_uri
cat >"$ROOT/lab.env.tmp" <<EOF
FERRY_CONFIG=$ROOT/ferry.yaml
FERRY_LAB_ROOT=$ROOT
FERRY_LAB_HOSTS=$N
FERRY_LAB_CACHE=$CACHE
FERRY_LAB_SHARED=$SHARED
FERRY_LAB_NET=$LAB_NET
EOF
if [ "$LAB_LINKS" = netns ]; then
  # FERRY_LAB_NET stays the lab's name; the hosts are on FERRY_LAB_LINK_NET, reached from
  # FERRY_LAB_NETNS_CLIENT (hack/lab-exec.sh sets FERRY_LAB_NET to FERRY_LAB_LINK_NET there)
  cat >>"$ROOT/lab.env.tmp" <<EOF
FERRY_LAB_LINKS=netns
FERRY_LAB_LINK_NET=$LINK_NET
FERRY_LAB_CLIENT_ADDR=$CLIENT_ADDR
FERRY_LAB_NETNS_SWITCH=$NS_SWITCH
FERRY_LAB_NETNS_CLIENT=$NS_CLIENT
FERRY_LAB_NETNS_HOSTS=$(for i in $(seq 1 "$N"); do host_ns "$i"; done | paste -sd,)
EOF
fi
mv "$ROOT/lab.env.tmp" "$ROOT/lab.env"

if [ ${#failed[@]} -gt 0 ]; then
  die "${failed[*]} failed (inventory written anyway: $ROOT/ferry.yaml)"
fi
say "lab of $N hosts up; inventory $ROOT/ferry.yaml, environment $ROOT/lab.env"
