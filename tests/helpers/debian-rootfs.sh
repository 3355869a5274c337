#!/usr/bin/env bash
# Builds (once) the Debian root file system the container-image tests and benchmark use:
# bookworm minbase + python3, made by mmdebstrap from deb.debian.org, kept under a fixed
# path so CI does not rebuild it every run. Prints the path. Rebuilt only when missing or
# incomplete (a build is made in a temporary folder and renamed into place when whole).
#   ROOTFS_CACHE (default /var/cache/appliance-tests): where the tree is kept.
set -euo pipefail
CACHE=${ROOTFS_CACHE:-/var/cache/appliance-tests}
ROOT=$CACHE/rootfs-bookworm-python3
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$CACHE"
exec 9>"$CACHE/.rootfs.lock"
flock 9
if [ -x "$ROOT/usr/bin/python3" ] && [ -f "$ROOT/.complete" ]; then
  echo "$ROOT"
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "debian-rootfs.sh: mmdebstrap missing (scripts/setup.sh installs it)" >&2; exit 1; }
tmp=$CACHE/.rootfs-build.$$
rm -rf "$tmp" "$ROOT"
trap 'rm -rf "$tmp"' EXIT
mmdebstrap --quiet --variant=minbase --include=python3 \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  bookworm "$tmp" "$MIRROR" >&2
touch "$tmp/.complete"
mv "$tmp" "$ROOT"
trap - EXIT
echo "$ROOT"
