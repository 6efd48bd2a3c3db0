# lab-ssh.sh: the lab's ssh (sourced by lab-up.sh and lab-down.sh, needs lab-common.sh and
# openssh-server/openssh-client). Every host runs its own sshd on $(host_addr i):$LAB_SSH_PORT,
# inside its mount namespace (and network namespace, FERRY_LAB_LINKS=netns), so a login's
# `virt-ssh-helper qemu:///system` reaches that host's libvirtd (qemu+ssh, ferry-ssh.yaml).
#
#   $ROOT/ssh/ferry_ed25519{,.pub}   ferry's own key (keyfile= in the inventory URIs)
#   $ROOT/ssh/known_hosts            every host's key as "[ADDR]:PORT ssh-ed25519 ..."
#   $ROOT/ssh/ssh_config, ssh        ferry's ssh client: the inventory URIs name the wrapper `ssh`
#                                    (command=), which runs /usr/bin/ssh -F ssh_config: that
#                                    known_hosts, strict host key checking, batch mode. libvirt's
#                                    ssh transport (unlike libssh) ignores a known_hosts= parameter.
#   host i ($ROOT/hosts/hosti):
#     sshd/ssh_host_ed25519_key      its host key
#     sshd/sshd_config               ListenAddress ADDR:2222, keys only, root by key only, no PAM
#     sshd/authorized_keys           ferry's key and every host's client key
#     log/sshd.log, run/sshd.pid     its log (sshd -E) and pid file
#     rootssh/ = /root/.ssh in its namespace (LAB_DIRS): id_ed25519 (its libvirtd's identity for
#                                    peer-to-peer migrations), known_hosts (every host), config
# Re-runnable: keys are kept; configs, known_hosts and authorized_keys are rewritten.

SSHDIR=$ROOT/ssh

# ssh_key FILE COMMENT: an ed25519 key pair, unless there is one.
ssh_key() {
  [ -s "$1" ] && [ -s "$1.pub" ] && return 0
  rm -f "$1" "$1.pub"
  ssh-keygen -q -t ed25519 -N '' -C "$2" -f "$1" >/dev/null || die "ssh-keygen could not make $1"
}

# ssh_write FILE: stdin to FILE, atomically, and only if it differs (its mtime says when it changed).
ssh_write() {
  local f=$1
  cat >"$f.tmp"
  if [ -e "$f" ] && cmp -s "$f.tmp" "$f"; then
    rm -f "$f.tmp"
  else
    mv "$f.tmp" "$f"
  fi
}

# ssh_ferry: ferry's key and client configuration.
ssh_ferry() {
  mkdir -p "$SSHDIR"
  chmod 700 "$SSHDIR"
  ssh_key "$SSHDIR/ferry_ed25519" "ferry@lab"
  ssh_write "$SSHDIR/ssh_config" <<EOF
# written by hack/lab-ssh.sh: ferry's ssh client for the lab (the wrapper $SSHDIR/ssh passes -F)
Host *
  UserKnownHostsFile $SSHDIR/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  CheckHostIP no
  BatchMode yes
  IdentitiesOnly yes
  IdentityAgent none
  ConnectTimeout 15
EOF
  ssh_write "$SSHDIR/ssh" <<EOF
#!/bin/sh
# written by hack/lab-ssh.sh: ssh with ferry's lab client configuration (command= in ferry-ssh.yaml)
exec /usr/bin/ssh -F '$SSHDIR/ssh_config' "\$@"
EOF
  chmod 755 "$SSHDIR/ssh"
}

# ssh_host i: host i's host key, client key and sshd_config (authorized_keys and known_hosts:
# ssh_trust, once every host has its keys).
ssh_host() {
  local i=$1 H addr
  H=$(host_dir "$i")
  addr=$(host_addr "$i")
  mkdir -p "$H/sshd" "$H/rootssh" "$H/run" "$H/log"
  chmod 700 "$H/rootssh"
  ssh_key "$H/sshd/ssh_host_ed25519_key" "host$i"
  ssh_key "$H/rootssh/id_ed25519" "root@host$i"
  ssh_write "$H/sshd/sshd_config" <<EOF
# written by hack/lab-ssh.sh: ferry lab host$i (started in the host's mount namespace)
ListenAddress $addr:$LAB_SSH_PORT
HostKey $H/sshd/ssh_host_ed25519_key
PidFile $H/run/sshd.pid
AuthorizedKeysFile $H/sshd/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
AllowAgentForwarding no
AllowTcpForwarding no
X11Forwarding no
PrintMotd no
LogLevel VERBOSE
EOF
  # what host i's libvirtd uses when it opens qemu+ssh to a peer without ferry's wrapper
  ssh_write "$H/rootssh/config" <<EOF
# written by hack/lab-ssh.sh: /root/.ssh/config of ferry lab host$i
Host *
  IdentityFile ~/.ssh/id_ed25519
  UserKnownHostsFile ~/.ssh/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  CheckHostIP no
  BatchMode yes
  IdentitiesOnly yes
EOF
}

# ssh_trust N: ferry's and every host's known_hosts, every host's authorized_keys (hosts 1..N).
ssh_trust() {
  local n=$1 i H kh keys
  kh=$(for i in $(seq 1 "$n"); do
    printf '[%s]:%s %s\n' "$(host_addr "$i")" "$LAB_SSH_PORT" "$(cut -d' ' -f1,2 "$(host_dir "$i")/sshd/ssh_host_ed25519_key.pub")"
  done)
  keys=$(
    cat "$SSHDIR/ferry_ed25519.pub"
    for i in $(seq 1 "$n"); do cat "$(host_dir "$i")/rootssh/id_ed25519.pub"; done
  )
  printf '%s\n' "$kh" | ssh_write "$SSHDIR/known_hosts"
  for i in $(seq 1 "$n"); do
    H=$(host_dir "$i")
    printf '%s\n' "$kh" | ssh_write "$H/rootssh/known_hosts"
    printf '%s\n' "$keys" | ssh_write "$H/sshd/authorized_keys"
  done
}

# ssh_ns_of PID: the mount namespace of a process ("" if gone); with FERRY_LAB_LINKS=netns its
# network namespace as well.
ssh_ns_of() {
  readlink "/proc/$1/ns/mnt" 2>/dev/null || true
  if [ "$LAB_LINKS" = netns ]; then readlink "/proc/$1/ns/net" 2>/dev/null || true; fi
}

# ssh_stop i: stop host i's sshd (its listener, by the pid file; sessions end with their clients).
ssh_stop() {
  local i=$1 H pid
  H=$(host_dir "$i")
  pid=$(live_pid "$H/run/sshd.pid" sshd)
  [ -n "$pid" ] || return 0
  stop_pid "$pid" "host$i sshd" 10 || return 1
  rm -f "$H/run/sshd.pid"
}

# ssh_stale i: before (re)starting host i's daemons: an sshd that does not share its libvirtd's
# namespace (libvirtd dead, to be started in a new one) is stopped; ssh_start starts it again.
ssh_stale() {
  local i=$1 H pid lpid
  H=$(host_dir "$i")
  pid=$(live_pid "$H/run/sshd.pid" sshd)
  [ -n "$pid" ] || return 0
  lpid=$(live_pid "$H/run/libvirtd.pid" libvirtd)
  if [ -z "$lpid" ] || [ "$(ssh_ns_of "$pid")" != "$(ssh_ns_of "$lpid")" ]; then
    say "host$i: sshd $pid is not in the namespace of a live libvirtd: stopping it"
    ssh_stop "$i"
  fi
}

# ssh_start i: host i's sshd in the namespace of its libvirtd, unless it runs there with the
# current sshd_config already.
ssh_start() {
  local i=$1 H pid lpid end
  H=$(host_dir "$i")
  lpid=$(live_pid "$H/run/libvirtd.pid" libvirtd)
  [ -n "$lpid" ] || { say "host$i: no libvirtd, no sshd"; return 1; }
  if ! awk '$5 == "/root/.ssh" {f=1} END {exit !f}' "/proc/$lpid/mountinfo" 2>/dev/null; then
    say "host$i: libvirtd $lpid was started without its own /root/.ssh (before lab-ssh.sh):"
    say "host$i: peer-to-peer migrations over ssh need hack/lab-down.sh and lab-up.sh again"
  fi
  pid=$(live_pid "$H/run/sshd.pid" sshd)
  if [ -n "$pid" ]; then
    if [ "$(ssh_ns_of "$pid")" = "$(ssh_ns_of "$lpid")" ] && [ "$H/run/sshd.pid" -nt "$H/sshd/sshd_config" ]; then
      return 0
    fi
    say "host$i: restarting sshd $pid (new sshd_config or another namespace)"
    ssh_stop "$i" || return 1
  fi
  say "host$i: starting sshd on $(host_addr "$i"):$LAB_SSH_PORT in the namespace of libvirtd $lpid"
  # privilege separation directory of Debian's sshd (the machine's /run: not a lab mount)
  mkdir -p -m 755 /run/sshd
  /usr/sbin/sshd -t -f "$H/sshd/sshd_config" 2>>"$H/log/sshd.log" || { say "host$i: sshd -t rejects $H/sshd/sshd_config (see $H/log/sshd.log)"; return 1; }
  local nsflags=(-m)
  [ "$LAB_LINKS" != netns ] || nsflags=(-m -n)
  nsenter -t "$lpid" "${nsflags[@]}" -- /usr/sbin/sshd -f "$H/sshd/sshd_config" -E "$H/log/sshd.log" \
    </dev/null >/dev/null 2>>"$H/log/sshd.log" 9>&- || { say "host$i: sshd did not start (see $H/log/sshd.log)"; return 1; }
  # sshd writes its pid file once it listens
  end=$((SECONDS + 10))
  while [ -z "$(live_pid "$H/run/sshd.pid" sshd)" ]; do
    if [ "$SECONDS" -ge "$end" ]; then
      say "host$i: sshd is not running after 10 s; tail of $H/log/sshd.log:"
      tail -n 5 "$H/log/sshd.log" | sed 's/^/    /' >&2
      return 1
    fi
    sleep 0.1
  done
}

# ssh_check i: ferry's connection to host i over qemu+ssh answers.
ssh_check() {
  local out
  out=$(in_client timeout 30 virsh -c "$(host_ssh_uri "$1")" version 2>&1) && return 0
  say "host$1: no answer on $(host_ssh_uri "$1"): $(printf '%s' "$out" | tr '\n' ' ' | cut -c1-400)"
  return 1
}
