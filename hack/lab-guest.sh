#!/usr/bin/env bash
# lab-guest.sh: lab guests (the hack/guest workload) on the hosts of hack/lab-up.sh.
#
#   lab-guest.sh define NAME [--host N] [--mem MiB] [--wss MiB] [--rate pages/s] [--start]
#        define (persistent) NAME on host N (default 1): TCG, 1 vCPU, direct kernel boot of the
#        guest initramfs, no disk, no NIC, serial appended to $FERRY_LAB_ROOT/shared/console/NAME.log
#        (defaults: --mem 128 --wss 16 --rate 0); --start also starts it
#   lab-guest.sh start NAME [--host N]      start it (host: where it is defined)
#   lab-guest.sh destroy NAME [--host N]    stop it hard (the definition stays)
#   lab-guest.sh undefine NAME [--host N]   destroy + undefine on every host holding it (N: that host only)
#   lab-guest.sh where NAME                 "hostN state" for every host holding NAME
#   lab-guest.sh log NAME [--wait SECONDS]  print the last heartbeat counter n (waiting up to
#        SECONDS for the first one); exit 1 if there is none, 3 if the console shows
#        CORRUPT, Oops or a kernel panic (the lines are printed on stderr)
#   lab-guest.sh xml NAME [options]         print the domain XML define would use
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
say() { printf '[lab-guest] %s\n' "$*" >&2; }
die() { printf '[lab-guest] ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lab-common.sh
. "$HERE/lab-common.sh"
# emulated links (FERRY_LAB_LINKS=netns): the hosts are reached from the lab's client namespace
if [ "$LAB_LINKS" = netns ] && ! lab_in_client; then
  [ -e "/run/netns/$NS_CLIENT" ] || die "the lab's client namespace $NS_CLIENT is missing: is the lab at $ROOT up?"
  exec bash "$HERE/lab-exec.sh" bash "$HERE/lab-guest.sh" "$@"
fi

usage() { sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }

[ $# -ge 2 ] || usage
cmd=$1 name=$2
shift 2
case "$name" in '' | -* | *[!A-Za-z0-9_.-]*) die "bad guest name '$name' (letters, digits, _ . - only)" ;; esac
host='' mem=128 wss=16 rate=0 start=0 wait=0
while [ $# -gt 0 ]; do
  case "$1" in
  --host) host=${2:-}; shift 2 ;;
  --mem) mem=${2:-}; shift 2 ;;
  --wss) wss=${2:-}; shift 2 ;;
  --rate) rate=${2:-}; shift 2 ;;
  --wait) wait=${2:-}; shift 2 ;;
  --start) start=1; shift ;;
  -h | --help) usage ;;
  *) die "unknown option $1" ;;
  esac
done
for v in mem wss rate wait; do
  case "${!v}" in '' | *[!0-9]*) die "--$v needs a non-negative integer, got '${!v}'" ;; esac
done
case "$host" in '' | [1-9] | [1-9][0-9]) ;; *) die "--host needs a host number, got '$host'" ;; esac

CONSOLE=$CONSOLE_DIR/$name.log

domain_xml() {
  [ "$wss" -le $((mem - 64)) ] || say "warning: --wss $wss MiB leaves less than 64 MiB of the $mem MiB for the kernel"
  cat <<EOF
<domain type='qemu'>
  <name>$name</name>
  <description>ferry lab guest (hack/lab-guest.sh)</description>
  <memory unit='MiB'>$mem</memory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$CACHE/vmlinuz</kernel>
    <initrd>$CACHE/guest-initrd.img</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 ferry.name=$name ferry.wss=$wss ferry.rate=$rate</cmdline>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <cpu mode='custom' match='exact'>
    <model fallback='forbid'>qemu64</model>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <serial type='file'>
      <source path='$CONSOLE' append='on'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}

# hosts_with NAME: "N state" for each lab host that knows the domain.
hosts_with() {
  local i st
  for i in $(lab_hosts); do
    st=$(timeout 10 virsh -q -c "$(host_uri "$i")" domstate "$name" 2>/dev/null) || continue
    echo "$i ${st// /_}"
  done
}

# pick_host: --host, else the host where NAME runs, else the only host where it is defined.
pick_host() {
  [ -n "$host" ] && { echo "$host"; return; }
  local found
  found=$(hosts_with)
  [ -n "$found" ] || die "$name is not defined on any lab host"
  if [ "$(echo "$found" | wc -l)" -gt 1 ]; then
    local r
    r=$(echo "$found" | awk '$2 == "running" || $2 == "paused" {print $1}')
    [ "$(echo "$r" | grep -c .)" -eq 1 ] || die "$name is on several hosts ($(echo "$found" | tr '\n' ' ')); pass --host"
    echo "$r"
  else
    echo "${found%% *}"
  fi
}

last_beat() {
  [ -f "$CONSOLE" ] || return 0
  tail -c 65536 "$CONSOLE" | tr -d '\r' | awk '
    /^ferry-guest heartbeat / { for (i = 3; i <= NF; i++) if ($i ~ /^n=/) n = substr($i, 3) }
    END { if (n != "") print n }'
}

case "$cmd" in
xml) domain_xml ;;
define)
  host=${host:-1}
  [ -d "$(host_dir "$host")" ] || die "host$host is not part of the lab (hack/lab-up.sh $host)"
  "$HERE/guest/build.sh" >/dev/null
  other=$(hosts_with | awk -v h="$host" '$1 != h {printf " host%s (%s)", $1, $2}')
  [ -z "$other" ] || die "$name already exists on$other; lab-guest.sh undefine $name first"
  st=$(vsh "$host" domstate "$name" 2>/dev/null || true)
  if [ "$st" != running ] && [ "$st" != paused ]; then
    mkdir -p "$CONSOLE_DIR"
    rm -f "$CONSOLE" # a new guest starts a new console log
  fi
  tmp=$(mktemp)
  trap 'rm -f "$tmp"' EXIT
  domain_xml >"$tmp"
  vsh "$host" define "$tmp" >/dev/null
  say "defined $name on host$host (mem ${mem} MiB, wss ${wss} MiB, rate ${rate} pages/s); console $CONSOLE"
  if [ "$start" = 1 ]; then
    vsh "$host" start "$name" >/dev/null
    say "started $name on host$host"
  fi
  ;;
start)
  h=$(pick_host)
  vsh "$h" start "$name" >/dev/null
  say "started $name on host$h"
  ;;
destroy)
  h=$(pick_host)
  vsh "$h" destroy "$name" >/dev/null
  say "destroyed $name on host$h"
  ;;
undefine)
  if [ -n "$host" ]; then list="$host"; else list=$(hosts_with | awk '{print $1}'); fi
  [ -n "$list" ] || die "$name is not defined on any lab host"
  for h in $list; do
    st=$(vsh "$h" domstate "$name" 2>/dev/null || true)
    [ "$st" = "shut off" ] || vsh "$h" destroy "$name" >/dev/null 2>&1 || true
    vsh "$h" undefine "$name" >/dev/null 2>&1 || true
    say "undefined $name on host$h"
  done
  ;;
where) hosts_with | sed 's/^/host/; s/_/ /g' ;;
log)
  end=$((SECONDS + wait))
  n=$(last_beat)
  while [ -z "$n" ] && [ "$SECONDS" -lt "$end" ]; do
    sleep 0.2
    n=$(last_beat)
  done
  [ -n "$n" ] || die "no heartbeat in $CONSOLE"
  echo "$n"
  if [ -f "$CONSOLE" ] && bad=$(tr -d '\r' <"$CONSOLE" | grep -a -E 'CORRUPT|Oops|Kernel panic|[Cc]all [Tt]race' | head -n 20) && [ -n "$bad" ]; then
    printf '%s\n' "$bad" >&2
    exit 3
  fi
  ;;
*) usage ;;
esac
