#!/bin/sh
# Build the Debian base image every stand-in starts FROM, without a registry: debootstrap a minimal
# bookworm from an apt mirror and import the tree as an image.
#   docker/standins/base-image.sh NAME [MIRROR [SECURITY_MIRROR]]     (as root)
# The mirrors default to the host's apt sources (deb822 or one-line), else deb.debian.org.
set -eu
name=${1:?usage: base-image.sh NAME [MIRROR [SECURITY_MIRROR]]}
docker=${DOCKER:-docker}

host_uris() {  # every http(s) URI of the host's apt sources, in order
  sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n'
  sed -n 's/^deb \(\[[^]]*\] \)*\([^ ]*\) .*/\2/p' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
}
mirror=${2:-$(host_uris | grep -E '^https?://.*/debian/?$' | head -n 1)}
mirror=${mirror:-http://deb.debian.org/debian}
security=${3:-$(host_uris | grep -E '^https?://.*/debian-security/?$' | head -n 1)}

root=$(mktemp -d "${TMPDIR:-/tmp}/attnlab-rootfs.XXXXXX")
trap 'rm -rf "$root" "$root.log"' EXIT
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -n 20 "$root.log" >&2; exit 1; }
{
  echo "deb $mirror bookworm main"
  echo "deb $mirror bookworm-updates main"
  if [ -n "$security" ]; then echo "deb $security bookworm-security main"; fi
} > "$root/etc/apt/sources.list"
# What an image does not need: downloaded packages and package lists (apt-get update fetches them).
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | "$docker" import --change 'CMD ["/bin/bash"]' - "$name"
