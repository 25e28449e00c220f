#!/usr/bin/env bash
# The fleet test bed in full, on demand: tests/fleet.rs's bed with twenty hosts (the suite runs
# it with six). Each host is a private dockerd and a bilge on its own loopback address
# (127.0.0.2 ... 127.0.0.21); one Debian Prometheus scrapes them through one file_sd file with
# the bundled rules, one Debian Alertmanager delivers to host 1, which relays. Hosts 3, 9 and 15
# fill up, host 7's build is recorded by host 2, host 12 is down when its alert is delivered.
# It prints the bed's figures (Alertmanager's webhook latency, scrape durations, the relay
# failures while host 12 was down). Root, on the test command's own test bed:
#
#   sudo scripts/fleet.sh [HOSTS]      (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
BILGE_FLEET_HOSTS="${1:-20}" BILGE_TEST_ONLY=fleet::a_fleet exec scripts/test.sh
