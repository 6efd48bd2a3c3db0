#!/usr/bin/env bash
# build.sh: build the lab guest's /init (hack/guest, static Go) and pack it into an
# uncompressed newc initramfs at ${FERRY_LAB_CACHE:-/var/cache/ferry-lab}/guest-initrd.img.
# Rebuilds only when a source (or this script) is newer than the image; prints the path.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${FERRY_LAB_CACHE:-/var/cache/ferry-lab}
IMG=$CACHE/guest-initrd.img
say() { printf '[guest-build] %s\n' "$*" >&2; }
die() { printf '[guest-build] ERROR: %s\n' "$*" >&2; exit 1; }

stale() {
  [ -s "$IMG" ] || return 0
  [ -n "$(find "$HERE" -maxdepth 1 \( -name '*.go' ! -name '*_test.go' -o -name build.sh \) -newer "$IMG" -print -quit)" ]
}

if ! stale && [ "${1:-}" != "--force" ]; then
  echo "$IMG"
  exit 0
fi

GO=$(command -v go || true)
[ -n "$GO" ] || GO=/usr/local/go/bin/go
[ -x "$GO" ] || die "go toolchain not found (PATH or /usr/local/go/bin/go)"
command -v cpio >/dev/null || die "cpio not installed (run hack/install-deps.sh)"

mkdir -p "$CACHE"
stage=$(mktemp -d "$CACHE/guest-stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/root/dev" "$stage/root/proc"
say "building /init from $HERE"
(cd "$HERE" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 "$GO" build -trimpath -ldflags='-s -w' -o "$stage/root/init" .) ||
  die "go build failed"
(cd "$stage/root" && printf '%s\n' . dev proc init | cpio --quiet -o -H newc -R 0:0 --reproducible >"$stage/initrd.img") ||
  die "cpio failed"
mv -f "$stage/initrd.img" "$IMG"
say "wrote $IMG ($(stat -c %s "$IMG") bytes)"
echo "$IMG"
