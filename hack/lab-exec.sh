#!/usr/bin/env bash
# lab-exec.sh CMD [ARGS...]: run CMD where ferry runs in the lab of hack/lab-up.sh, with the lab's
# environment: the KEY=value lines of $FERRY_LAB_ROOT/lab.env (FERRY_CONFIG unless already set,
# FERRY_LAB_ROOT, FERRY_LAB_HOSTS, ...).
#
# With emulated links (FERRY_LAB_LINKS=netns, or a lab lab-up.sh made so) CMD runs in the lab's
# client namespace, the only place the hosts can be reached from; there FERRY_LAB_NET is the
# links' /24 (the hosts' addresses, FERRY_LAB_LINK_NET) and FERRY_LAB_LO_NET the lab's own
# loopback /24, which names it. Without, CMD runs right here with the lab's environment.
#
#   hack/lab-exec.sh ./bin/ferry hosts
#   hack/lab-exec.sh virsh -c qemu+tcp://10.0.10.1/system version
#   hack/lab-exec.sh go test -tags e2e ./test/e2e/
#
# Exit status: CMD's; 2 for a bad invocation, 1 when the lab is not there.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
say() { printf '[lab-exec] %s\n' "$*" >&2; }
die() { printf '[lab-exec] ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lab-common.sh
. "$HERE/lab-common.sh"

case "${1:-}" in
'' | -h | --help)
  sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
  ;;
esac
[ -s "$ROOT/lab.env" ] || die "no lab at $ROOT ($ROOT/lab.env is missing): run hack/lab-up.sh (FERRY_LAB_ROOT picks the lab)"

# the lab's environment; FERRY_CONFIG is the caller's when set (another of the lab's inventories)
while IFS= read -r line; do
  case "$line" in
  FERRY_CONFIG=*) [ -n "${FERRY_CONFIG:-}" ] || export "$line" ;;
  [A-Z]*=*)
    key=${line%%=*}
    case "$key" in *[!A-Z0-9_]*) continue ;; esac
    export "$line"
    ;;
  esac
done <"$ROOT/lab.env"
export FERRY_LAB_ROOT=$ROOT
# the lab is what its lab.env says it is (FERRY_LAB_NET, FERRY_LAB_LINKS, ...), whatever the caller had
unset FERRY_LAB_LO_NET
# shellcheck source=lab-common.sh
. "$HERE/lab-common.sh"

if [ "$LAB_LINKS" != netns ]; then
  exec "$@"
fi
[ "$(lab_env_get "$ROOT/lab.env" FERRY_LAB_LINKS)" = netns ] ||
  die "the lab at $ROOT runs without emulated links (its lab.env has no FERRY_LAB_LINKS=netns); unset FERRY_LAB_LINKS, or hack/lab-down.sh and FERRY_LAB_LINKS=netns hack/lab-up.sh"
export FERRY_LAB_LINKS=netns FERRY_LAB_LO_NET=$LAB_NET FERRY_LAB_NET=$LINK_NET FERRY_LAB_LINK_NET=$LINK_NET
if lab_in_client; then
  exec "$@"
fi
[ -e "/run/netns/$NS_CLIENT" ] || die "the lab's client namespace $NS_CLIENT is missing: is the lab at $ROOT up? (hack/lab-up.sh)"
[ "$(id -u)" = 0 ] || die "must run as root (ip netns exec)"
exec ip netns exec "$NS_CLIENT" "$@"
