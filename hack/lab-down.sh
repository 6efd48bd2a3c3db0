#!/usr/bin/env bash
# lab-down.sh [--purge]: stop the lab of hack/lab-up.sh.
#
# For every host under $FERRY_LAB_ROOT/hosts (whatever N it was started with): destroy and
# undefine its guests over qemu+tcp://127.0.10.N/system, kill any QEMU left behind (only the
# PIDs in that host's run/qemu/*.pid), stop its sshd (lab-ssh.sh), libvirtd and virtlogd by their
# pid files (SIGTERM, deadline, SIGKILL), and empty its run/ directory. Lab mounts leaked into
# this namespace (there should be none) are unmounted. With emulated links (FERRY_LAB_LINKS=netns,
# or a lab that lab-up.sh made so: $FERRY_LAB_ROOT/links.env) the hosts are reached from the lab's
# client namespace, and once their daemons are stopped the network namespaces lab-up.sh made
# (listed in links.env) are deleted by name, with their veth pairs and bridge (lab-net.sh).
# The lab directory stays (host configs, pristine /etc/libvirt,
# shared/console logs) unless --purge, which removes $FERRY_LAB_ROOT. Exit 0 when nothing of the
# lab is left running.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
say() { printf '[lab-down] %s\n' "$*" >&2; }
die() { printf '[lab-down] ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lab-common.sh
. "$HERE/lab-common.sh"
# shellcheck source=lab-ssh.sh
. "$HERE/lab-ssh.sh"
# shellcheck source=lab-net.sh
. "$HERE/lab-net.sh"

purge=0
case "${1:-}" in
'') ;;
--purge) purge=1 ;;
*) die "usage: lab-down.sh [--purge]" ;;
esac
[ "$(id -u)" = 0 ] || die "must run as root"
[ -d "$ROOT" ] || { say "no lab at $ROOT"; exit 0; }
# a lab made with emulated links goes down as one, whatever FERRY_LAB_LINKS says here
if [ -s "$ROOT/links.env" ] && { [ "$LAB_LINKS" != netns ] || [ "$LAB_NET" != "$(lab_env_get "$ROOT/links.env" FERRY_LAB_NET)" ]; }; then
  say "the lab at $ROOT was made with emulated links ($ROOT/links.env): taking it down as such"
  FERRY_LAB_LINKS=netns
  FERRY_LAB_LO_NET=$(lab_env_get "$ROOT/links.env" FERRY_LAB_NET)
  FERRY_LAB_LINK_NET=$(lab_env_get "$ROOT/links.env" FERRY_LAB_LINK_NET)
  # shellcheck source=lab-common.sh
  . "$HERE/lab-common.sh"
fi

exec 9>"$ROOT/.lock"
flock -w 300 9 || die "another lab-up/lab-down holds $ROOT/.lock"

left=()
for i in $(lab_hosts); do
  H=$(host_dir "$i")
  lpid=$(live_pid "$H/run/libvirtd.pid" libvirtd)
  vpid=$(live_pid "$H/run/virtlogd.pid" virtlogd)
  spid=$(live_pid "$H/run/sshd.pid" sshd)
  # sshd first: no new ssh connections to a host going down
  if [ -n "$spid" ]; then
    ssh_stop "$i" || left+=("host$i sshd $spid")
  fi
  if [ -n "$lpid" ]; then
    doms=$(in_client timeout 30 virsh -q -c "$(host_uri "$i")" list --all --name 2>/dev/null || true)
    for d in $doms; do
      st=$(in_client timeout 30 virsh -q -c "$(host_uri "$i")" domstate "$d" 2>/dev/null || true)
      if [ "$st" != "shut off" ]; then
        in_client timeout 30 virsh -q -c "$(host_uri "$i")" destroy "$d" >/dev/null 2>&1 || say "host$i: destroy $d failed"
      fi
      in_client timeout 30 virsh -q -c "$(host_uri "$i")" undefine --nvram "$d" >/dev/null 2>&1 ||
        in_client timeout 30 virsh -q -c "$(host_uri "$i")" undefine "$d" >/dev/null 2>&1 || true
      say "host$i: destroyed and undefined guest $d"
    done
  fi
  # QEMU processes libvirt did not reap (libvirtd dead, destroy failed, migration half done)
  for pf in "$H"/run/qemu/*.pid; do
    [ -e "$pf" ] || continue
    qpid=$(live_pid "$pf" qemu-system)
    [ -n "$qpid" ] || continue
    say "host$i: stopping leftover QEMU pid $qpid ($(basename "$pf" .pid))"
    stop_pid "$qpid" "QEMU $(basename "$pf" .pid)" 10 || left+=("host$i qemu $qpid")
  done
  if [ -n "$lpid" ]; then
    stop_pid "$lpid" "host$i libvirtd" 20 || left+=("host$i libvirtd $lpid")
  fi
  if [ -n "$vpid" ]; then
    stop_pid "$vpid" "host$i virtlogd" 10 || left+=("host$i virtlogd $vpid")
  fi
  if [ -z "$(live_pid "$H/run/libvirtd.pid" libvirtd)$(live_pid "$H/run/virtlogd.pid" virtlogd)$(live_pid "$H/run/sshd.pid" sshd)" ]; then
    [ -n "$lpid$vpid$spid" ] && say "host$i: stopped (libvirtd ${lpid:--}, virtlogd ${vpid:--}, sshd ${spid:--})"
    # like a reboot: run/ is a tmpfs on a real host
    find "$H/run" -mindepth 1 -delete 2>/dev/null || true
  fi
done

# Lab bind mounts are made in private namespaces; unmount any that leaked here anyway.
leaked=$(awk -v root="$ROOT/hosts/" '
  $5 ~ /^\/(etc\/libvirt|run\/libvirt|var\/lib\/libvirt|var\/log\/libvirt|var\/cache\/libvirt|root\/\.ssh)$/ &&
  ($4 ~ /\/hosts\/host[0-9]+\/(etc|run|lib|log|cache|rootssh)$/ || index($4, root) == 1) {print $5}' /proc/self/mountinfo | sort -r)
for m in $leaked; do
  say "unmounting leaked lab mount $m"
  umount "$m" || umount -l "$m" || left+=("mount $m")
done

# emulated links: the namespaces, once nothing of the hosts runs in them
if [ "$LAB_LINKS" = netns ] || [ -s "$ROOT/links.env" ]; then
  net_down
fi

if [ ${#left[@]} -gt 0 ]; then
  die "still running: ${left[*]}"
fi

if [ "$purge" = 1 ]; then
  case "$ROOT" in / | /var | /var/lib | /etc | /usr | /home | /root | "") die "refusing to purge $ROOT" ;; esac
  exec 9>&-
  say "purging $ROOT"
  rm -rf -- "$ROOT"
fi
say "lab down"
