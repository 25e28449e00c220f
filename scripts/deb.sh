#!/usr/bin/env bash
# Builds bilge's Debian package, target/debian/bilge_<version>-1_<arch>.deb, and prints its path.
#
#   scripts/deb.sh            build the dist binary (cargo build --profile dist), then package it
#   scripts/deb.sh --no-build package the dist binary already in target/dist/bilge
#
# The package holds /usr/bin/bilge, the systemd unit (deploy/bilge.service with the package's
# paths and the policy file), /etc/bilge/bilge.toml and /etc/default/bilge as conffiles, man pages
# and shell completions generated from the binary's own flags, the README, the runbook, the alert
# rules and the dashboard. Its postinst makes the webhook token the unit needs; its postrm purges
# it and the service's state. cargo-deb (pinned below) is installed when missing; Cargo.toml's
# [package.metadata.deb] says what goes where. tests/package.rs installs, runs and purges the
# result.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
build=1
case "${1:-}" in
  --no-build) build=0 ;;
  "") ;;
  *) echo "usage: scripts/deb.sh [--no-build]" >&2; exit 2 ;;
esac

if [ "$(cargo deb --version 2>/dev/null || true)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  echo "scripts/deb.sh: installing cargo-deb $CARGO_DEB_VERSION" >&2
  cargo install --quiet --locked cargo-deb --version "=$CARGO_DEB_VERSION"
fi

if [ "$build" = 1 ]; then
  cargo build --locked --profile dist --bin bilge
fi
bin=target/dist/bilge
[ -x "$bin" ] || { echo "scripts/deb.sh: $bin is missing: run without --no-build" >&2; exit 1; }

# What the package holds beside the binary and the files in deploy/deb/, made from the binary and
# from deploy/bilge.service, under target/deb/ (Cargo.toml's assets and systemd-units name it).
gen=target/deb
rm -rf "$gen"
mkdir -p "$gen/man" "$gen/completions"

# The unit as installed by the package: the binary in /usr/bin, the packaged policy file, and a
# header that says where things are instead of how to install them by hand.
awk '
  NR == 1 { print "# bilge as a hardened systemd service, as the bilge package installs it."; next }
  /^#   install / || /^#   systemctl daemon-reload/ { next }
  /^# Optional: \/etc\/bilge\/bilge.toml/ {
    print "# The package made /etc/bilge/webhook-token (root-only, random; give the same token to"
    print "# Alertmanager) and installed the policy /etc/bilge/bilge.toml and /etc/default/bilge for"
    print "# BILGE_* environment variables (every flag has one). Change the unit with `systemctl edit bilge`."
    getline; next
  }
  { gsub("/usr/local/bin/bilge", "/usr/bin/bilge") }
  /^ExecStart=\/usr\/bin\/bilge serve \\$/ { print; print "    --config=/etc/bilge/bilge.toml \\"; next }
  { print }
' deploy/bilge.service > "$gen/bilge.service"
# The rewrite must have happened: a changed deploy/bilge.service must change this script too.
grep -q '^    --config=/etc/bilge/bilge.toml \\$' "$gen/bilge.service" \
  && ! grep -q /usr/local "$gen/bilge.service" \
  && ! grep -q '^# Optional' "$gen/bilge.service" \
  || { echo "scripts/deb.sh: deploy/bilge.service no longer has the lines this script rewrites" >&2; exit 1; }

# Man pages: bilge(1) and one for each command, compressed as Debian keeps them.
for cmd in "" serve build clean df healthcheck completions; do
  page=bilge${cmd:+-$cmd}.1
  # shellcheck disable=SC2086
  "$bin" man $cmd > "$gen/man/$page"
  gzip -9n "$gen/man/$page"
done

"$bin" completions bash > "$gen/completions/bilge"
"$bin" completions zsh > "$gen/completions/_bilge"
"$bin" completions fish > "$gen/completions/bilge.fish"

cargo deb --no-build --profile dist --output target/debian/ >&2
version=$(cargo metadata --no-deps --format-version 1 --locked | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "bilge"))')
deb="target/debian/bilge_${version}-1_$(dpkg --print-architecture).deb"
[ -f "$deb" ] || { echo "scripts/deb.sh: cargo deb made no $deb" >&2; exit 1; }
# The maintainer scripts as dpkg will run them (cargo-deb's systemd steps spliced in) must parse.
ctl=$(mktemp -d)
trap 'rm -rf "$ctl"' EXIT
dpkg-deb -e "$deb" "$ctl"
for script in "$ctl"/postinst "$ctl"/prerm "$ctl"/postrm; do
  sh -n "$script" || { echo "scripts/deb.sh: $(basename "$script") in $deb does not parse" >&2; exit 1; }
done
echo "$PWD/$deb"
