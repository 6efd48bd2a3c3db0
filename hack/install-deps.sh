#!/usr/bin/env bash
# install-deps.sh: everything the ferry lab needs on a Debian 12 machine, idempotent.
#   - libvirt 11 / QEMU 10 from bookworm-backports (bookworm's QEMU 7.2 corrupts TCG
#     guests in bandwidth-capped pre-copy, see DESIGN.md §8)
#   - the libvirt-qemu user and kvm group the qemu driver insists on
#   - a guest kernel (Debian's cloud kernel, unpacked, never installed into /boot)
set -euo pipefail

CACHE=${FERRY_LAB_CACHE:-/var/cache/ferry-lab}
say() { printf '[install-deps] %s\n' "$*"; }
die() { printf '[install-deps] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs Debian packages)"

# libvirt-daemon-driver-storage: dir pools and vol-upload/vol-download (the lab's `default` pool, cold moves)
PKGS=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-driver-storage libvirt-clients libvirt-dev qemu-system-x86 qemu-utils)
# ovmf: UEFI firmware for the cold-move e2e guest with NVRAM; iproute2: the lab's network
# namespaces, veth pairs, bridge and tc shaping (emulated links), and `ss -K` cuts the
# post-copy stream in e2e; e2fsprogs: `chattr +i` makes a delete fail in the cold recover e2e
# openssl: the lab's CA and certificates (TLS); tcpdump: e2e checks what crosses the wire
# openssh-server, openssh-client: qemu+ssh (lab-ssh.sh runs its own sshd per host on port 2222;
# the machine's own sshd service is neither needed nor started here)
EXTRA=(cpio time sqlite3 pkg-config jq ovmf iproute2 e2fsprogs openssl tcpdump openssh-server openssh-client)

have_backports_versions() {
  local v
  v=$(dpkg-query -W -f='${Version}' libvirt-daemon 2>/dev/null || true)
  case "$v" in 11.*|12.*) ;; *) return 1 ;; esac
  v=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
  case "$v" in 1:10.*|1:11.*) ;; *) return 1 ;; esac
  for p in "${PKGS[@]}" "${EXTRA[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 1
  done
}

if have_backports_versions; then
  say "libvirt $(dpkg-query -W -f='${Version}' libvirt-daemon) and QEMU $(dpkg-query -W -f='${Version}' qemu-system-x86) already installed"
else
  src=/etc/apt/sources.list.d/ferry-bookworm-backports.sources
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # Reuse the URI and keyring of the machine's own bookworm entry.
    uri=$(awk '/^URIs:/{u=$2} /^Suites:/ && /(^| )bookworm( |$)/{print u; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    key=$(awk '/^Signed-By:/{k=$2} /^Suites:/ && /(^| )bookworm( |$)/{f=1} f&&k{print k; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=http://deb.debian.org/debian
    [ -n "$key" ] || key=/usr/share/keyrings/debian-archive-keyring.gpg
    say "adding bookworm-backports ($uri) in $src"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' "$uri" "$key" >"$src"
  fi
  say "apt-get update"
  apt-get update -qq || die "apt-get update failed"
  say "installing ${PKGS[*]} from bookworm-backports"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports --no-install-recommends \
    -o Dpkg::Options::=--force-confold "${PKGS[@]}" >/dev/null || die "installing libvirt/QEMU from bookworm-backports failed"
  # policy-rc.d (Debian's invoke-rc.d hook) keeps the packages' services, the machine's sshd on
  # port 22 among them, from being started by the install; only one we made is removed again.
  policy=''
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\n# ferry install-deps.sh: no service starts during the install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${EXTRA[@]}" >/dev/null || die "installing ${EXTRA[*]} failed"
  if [ -n "$policy" ]; then rm -f "$policy"; trap - EXIT; fi
  have_backports_versions || die "expected libvirt 11 and QEMU 10 after install, got libvirt $(dpkg-query -W -f='${Version}' libvirt-daemon 2>/dev/null) QEMU $(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null)"
  say "installed libvirt $(dpkg-query -W -f='${Version}' libvirt-daemon), QEMU $(dpkg-query -W -f='${Version}' qemu-system-x86)"
fi

# The qemu driver refuses to start without these, even when it runs guests as root.
getent group kvm >/dev/null || { say "adding group kvm"; groupadd -r kvm; }
getent group libvirt-qemu >/dev/null || { say "adding group libvirt-qemu"; groupadd -r libvirt-qemu; }
getent passwd libvirt-qemu >/dev/null || { say "adding user libvirt-qemu"; useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu; }

# Guest kernel: Debian's cloud kernel, unpacked into the cache.
mkdir -p "$CACHE"
if [ ! -s "$CACHE/vmlinuz" ]; then
  dep=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$dep" ] || die "cannot resolve linux-image-cloud-amd64 to a kernel package (apt-get update?)"
  say "fetching guest kernel $dep"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq "$dep" >/dev/null) || die "apt-get download $dep failed"
  dpkg -x "$tmp"/*.deb "$tmp/x"
  cp "$tmp"/x/boot/vmlinuz-* "$CACHE/vmlinuz.tmp" && mv "$CACHE/vmlinuz.tmp" "$CACHE/vmlinuz"
  rm -rf "$tmp"
fi
say "guest kernel: $CACHE/vmlinuz"
say "done"
