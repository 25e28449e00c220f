#!/usr/bin/env bash
# scripts/engines.sh [DIR]: fetches Debian's newest packaged Docker Engine (docker.io) and
# containerd from Debian's unstable suite and unpacks them (dpkg-deb -x) into a private folder,
# never over the system's packages. Prints that folder: its usr/sbin/dockerd, usr/bin/containerd
# and usr/bin/containerd-shim-runc-v2 run on bookworm with bookworm's runc (unstable's runc needs a
# newer glibc, so it is left out and the system's /usr/sbin/runc is used).
#
# apt does the fetching with a private state directory (its own sources list, lists and cache
# under DIR), so the packages are verified against Debian's archive keyring as any install is,
# and the system's apt configuration and state are untouched. A version already unpacked under
# DIR is reused. DIR defaults to target/engines.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${1:-target/engines}
mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial"
dir=$(cd "$dir" && pwd)
mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror unstable main" \
  >"$dir/apt/sources.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$dir/apt/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$dir/apt/lists"
  -o "Dir::State::Status=/dev/null"
  -o "Dir::Cache=$dir/apt/cache"
  -o "APT::Architectures=amd64"
  -o "Acquire::Languages=none"
  -o "APT::Sandbox::User=root"
  -q
)
apt-get "${apt_opts[@]}" update >"$dir/apt/update.log" 2>&1 ||
  { cat "$dir/apt/update.log" >&2; echo "engines.sh: apt-get update of unstable failed" >&2; exit 1; }
version() { apt-cache "${apt_opts[@]}" show "$1" 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -1; }
docker_v=$(version docker.io)
containerd_v=$(version containerd)
[ -n "$docker_v" ] && [ -n "$containerd_v" ] ||
  { echo "engines.sh: unstable lists no docker.io or containerd" >&2; exit 1; }
out="$dir/docker.io_${docker_v}+containerd_${containerd_v}"
if [ ! -e "$out/.complete" ]; then
  rm -rf "$out" "$out.partial" "$dir/debs"
  mkdir -p "$dir/debs"
  (cd "$dir/debs" && apt-get "${apt_opts[@]}" download "docker.io=$docker_v" "containerd=$containerd_v") \
    >"$dir/apt/download.log" 2>&1 ||
    { cat "$dir/apt/download.log" >&2; echo "engines.sh: downloading the packages failed" >&2; exit 1; }
  mkdir -p "$out.partial"
  for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$out.partial"; done
  for bin in usr/sbin/dockerd usr/bin/containerd usr/bin/containerd-shim-runc-v2; do
    [ -x "$out.partial/$bin" ] || { echo "engines.sh: $bin is not in the packages" >&2; exit 1; }
  done
  rm -rf "$dir/debs"
  touch "$out.partial/.complete"
  mv "$out.partial" "$out"
fi
echo "$out"
