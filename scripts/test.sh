#!/usr/bin/env bash
# bilge's one test command. On a clean Debian machine, as root, it:
#   1. installs from Debian's packages whatever the tests need and is missing;
#   2. checks formatting and lints;
#   3. starts a private dockerd on temporary paths and exports its socket;
#   4. runs every Rust test (unit + integration against real Docker, Prometheus, Alertmanager,
#      Chromium), the engine matrix (the Docker-facing tests again on Debian's newest packaged
#      engine, unpacked by scripts/engines.sh, with each image store), a short pass of every
#      fuzz target (scripts/fuzz.sh) and the bundle checks (rules, dashboard, deploy files);
#   5. stops the daemon and removes its files, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: run as root (it starts dockerd and mounts loop filesystems)" >&2
  exit 1
fi

say() { printf '\n==> %s\n' "$*"; }

# ---- 1. packages ------------------------------------------------------------------------
# binary => Debian package
declare -A NEED=(
  [/usr/sbin/dockerd]=docker.io
  [/usr/bin/docker]=docker.io
  [/bin/busybox]=busybox-static
  [/sbin/mkfs.ext4]=e2fsprogs
  [/usr/bin/prometheus]=prometheus
  [/usr/bin/promtool]=prometheus
  [/usr/bin/prometheus-alertmanager]=prometheus-alertmanager
  [/usr/bin/amtool]=prometheus-alertmanager
  [/usr/bin/chromium]=chromium
  [/usr/bin/docker-compose]=docker-compose
  [/usr/bin/systemd-analyze]=systemd
  [/usr/bin/kubectl]=kubernetes-client
  [/usr/bin/curl]=curl
  [/usr/bin/jq]=jq
  [/usr/bin/groff]=groff-base
  [/usr/bin/pkill]=procps
  [/usr/bin/flock]=util-linux
  [/usr/bin/sqlite3]=sqlite3
  [/usr/bin/unshare]=util-linux
  [/usr/bin/openssl]=openssl
  [/usr/lib/python3/dist-packages/fusepy.py]=python3-fusepy
)
missing=()
for path in "${!NEED[@]}"; do
  [ -e "$path" ] || missing+=("${NEED[$path]}")
done
command -v python3 >/dev/null || missing+=(python3 python3-pip)
if [ "${#missing[@]}" -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  say "installing Debian packages: $pkgs"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q $pkgs
fi
if ! python3 -c 'import yaml, kubernetes_validate' 2>/dev/null; then
  say "installing Python test tools (scripts/requirements-test.txt)"
  python3 -m pip install -q --disable-pip-version-check -r scripts/requirements-test.txt
fi

# ---- 2. format and lints ----------------------------------------------------------------
say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
say "module graph: no cycle, cli and leaves import nothing, only config names config"
python3 scripts/check_imports.py

# ---- 3. a private Docker daemon -----------------------------------------------------------
# Everything this run makes lives in $TESTBED: the shared daemon, and (through BILGE_TEST_TMP)
# every test's own daemons, servers and filesystems. The cleanup undoes exactly what is recorded
# there: the processes whose ids were written into pid files under $TESTBED (each checked to
# still name $TESTBED on its command line), the containers' shims, and the mounts under $TESTBED.
# It never kills by a name pattern and never removes anything outside $TESTBED, so another
# checkout's run on the same host is left alone.
TESTBED=$(mktemp -d /tmp/bilge-testbed.XXXXXX)
# Others may search it, not list it: the image test's bilge runs as uid 65532 in a container and
# must reach the data roots' mount points under here, as it reaches /var/lib/docker on a host.
chmod 0711 "$TESTBED"
export BILGE_TEST_ARTIFACTS="${BILGE_TEST_ARTIFACTS:-$TESTBED/artifacts}"
export BILGE_TEST_TMP="$TESTBED/tmp"
mkdir -p "$BILGE_TEST_ARTIFACTS" "$BILGE_TEST_TMP"
DOCKERD_PID=""
DOCKERD_DIR=""
# kill_owned PID: SIGKILL PID if its command line names $TESTBED.
kill_owned() {
  local pid=$1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  [ -r "/proc/$pid/cmdline" ] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$TESTBED" && kill -9 "$pid" 2>/dev/null
  return 0
}
# start_dockerd DIR [dockerd args…]: a shared test daemon on DIR's paths (socket, data root, exec
# root, pid file), exported as DOCKER_HOST; the engine is the one in BILGE_TEST_ENGINE_DIR (the
# matrix below) or bookworm's. Waits until it answers.
start_dockerd() {
  local dir=$1 dockerd=/usr/sbin/dockerd
  shift
  mkdir -p "$dir"
  local env=()
  if [ -n "${BILGE_TEST_ENGINE_DIR:-}" ]; then
    dockerd="$BILGE_TEST_ENGINE_DIR/usr/sbin/dockerd"
    env=(PATH="$BILGE_TEST_ENGINE_DIR/usr/bin:$BILGE_TEST_ENGINE_DIR/usr/sbin:$PATH")
    local snapshotter=false
    [ "${BILGE_TEST_ENGINE_STORE:-classic}" = containerd ] && snapshotter=true
    echo "{\"features\": {\"containerd-snapshotter\": $snapshotter}}" >"$dir/daemon.json"
    set -- --config-file "$dir/daemon.json" --ip6tables=false "$@"
  fi
  say "starting a private dockerd in $dir ($dockerd)"
  env "${env[@]}" "$dockerd" --host "unix://$dir/docker.sock" --data-root "$dir/data" \
    --exec-root "$dir/exec" --pidfile "$dir/docker.pid" \
    --iptables=false --bridge=none --ip-masq=false "$@" >"$dir/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  DOCKERD_DIR=$dir
  export DOCKER_HOST="unix://$dir/docker.sock"
  for _ in $(seq 300); do
    /usr/bin/docker version >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || { cat "$dir/dockerd.log"; echo "dockerd died" >&2; exit 1; }
    sleep 0.1
  done
  /usr/bin/docker version --format 'dockerd {{.Server.Version}} (API {{.Server.APIVersion}}) is up'
}
# stop_dockerd: removes the shared daemon's containers and stops it.
stop_dockerd() {
  [ -n "$DOCKERD_PID" ] || return 0
  local ids
  ids=$(DOCKER_HOST="unix://$DOCKERD_DIR/docker.sock" /usr/bin/docker ps -aq 2>/dev/null) || true
  # shellcheck disable=SC2086
  if [ -n "$ids" ]; then
    DOCKER_HOST="unix://$DOCKERD_DIR/docker.sock" /usr/bin/docker rm -f $ids >/dev/null 2>&1 || true
  fi
  kill "$DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$DOCKERD_PID" 2>/dev/null || true
  wait "$DOCKERD_PID" 2>/dev/null || true
  DOCKERD_PID=""
  return 0
}
cleanup() {
  local rc=$?
  set +e
  stop_dockerd
  # What a crashed test left: the processes it recorded (dockerd's docker.pid, containerd.pid,
  # the servers' .pid files), and each container's shim and first process (init.pid; the shim
  # is its parent), all under $TESTBED.
  while IFS= read -r -d '' f; do
    pid=$(head -c 32 "$f" 2>/dev/null | tr -dc 0-9)
    [ -n "$pid" ] || continue
    if [ "$(basename "$f")" = init.pid ]; then
      shim=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null)
      if [ -n "$shim" ] && tr '\0' ' ' <"/proc/$shim/cmdline" 2>/dev/null | grep -qF "$TESTBED"; then
        kill -9 "$pid" "$shim" 2>/dev/null
      fi
    else
      kill_owned "$pid"
    fi
  done < <(find "$TESTBED" -name '*.pid' -print0 2>/dev/null)
  # The package tests/package.rs installed, if a crash kept its guard from purging it: the test
  # writes this marker before dpkg -i, and only when no bilge package was here before.
  if [ -e "$BILGE_TEST_TMP/deb-installed" ]; then
    dpkg --purge bilge >/dev/null 2>&1
  fi
  grep -oE " $TESTBED[^ ]* " /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$TESTBED"
  exit $rc
}
trap cleanup EXIT INT TERM

start_dockerd "$TESTBED"

# ---- 4. tests -----------------------------------------------------------------------------
# BILGE_TEST_ONLY=FILTER runs only the integration tests matching FILTER, with their output, on
# this same test bed: how scripts/fleet.sh runs the twenty-host fleet in full.
if [ -n "${BILGE_TEST_ONLY:-}" ]; then
  say "cargo test --test tests $BILGE_TEST_ONLY (BILGE_TEST_ONLY)"
  cargo test --locked --test tests "$BILGE_TEST_ONLY" -- --nocapture --test-threads=1
  say "done: $BILGE_TEST_ONLY"
  exit 0
fi
say "cargo build (debug, and the dist binary that ships, for the image, container and package tests)"
cargo build --locked --all-targets
cargo build --locked --profile dist
export BILGE_DIST_BIN="$PWD/target/dist/bilge"
say "the Debian package (scripts/deb.sh --no-build: cargo-deb around the dist binary)"
BILGE_DEB=$(scripts/deb.sh --no-build)
export BILGE_DEB
say "Debian's newest packaged Docker Engine, for the engine matrix (scripts/engines.sh)"
ENGINE_DIR=$(scripts/engines.sh)
# The tests that need a newer engine whatever the run's engine (a containerd of its own).
export BILGE_TEST_NEWEST_ENGINE_DIR="$ENGINE_DIR"
say "cargo test"
cargo test --locked -- --test-threads="${BILGE_TEST_THREADS:-4}"

# The engine matrix: the Docker-facing tests again on Debian's newest packaged engine (unpacked
# by scripts/engines.sh into target/engines, not installed), once with the classic image store and
# once with the containerd image store, each on its own shared daemon. The tests picked are those
# whose figures or actions depend on the engine: the exporter's agreement with `docker system df
# -v`, every cleanup level and the watermarks, the webhook's prunes, and a real BuildKit ENOSPC
# classified (the rest of the suite exercises bilge's own code and runs once, above).
MATRIX_TESTS=(exporter:: cleanup:: lru:: webhook:: builds::real_builds builds::the_seed_scenario
  builds::clean_and_retry builds::min_free)
stop_dockerd
for store in classic containerd; do
  export BILGE_TEST_ENGINE_DIR="$ENGINE_DIR" BILGE_TEST_ENGINE_STORE="$store"
  start_dockerd "$TESTBED/engine-$store"
  say "cargo test on $(basename "$ENGINE_DIR"), $store image store: ${MATRIX_TESTS[*]}"
  cargo test --locked --test tests -- --test-threads="${BILGE_TEST_THREADS:-4}" "${MATRIX_TESTS[@]}"
  say "smoke: bilge df on the $store store"
  ./target/debug/bilge df
  stop_dockerd
done
unset BILGE_TEST_ENGINE_DIR BILGE_TEST_ENGINE_STORE
start_dockerd "$TESTBED"

say "fuzz: a short pass of every target (scripts/fuzz.sh, ${BILGE_FUZZ_SECONDS:-15} s each)"
FUZZ_SECONDS="${BILGE_FUZZ_SECONDS:-15}" scripts/fuzz.sh

say "smoke: bilge df against the shared test daemon"
./target/debug/bilge df

if [ -f scripts/check-bundle.sh ]; then
  say "bundle checks (rules, Alertmanager config, dashboard, deploy files)"
  BILGE_BIN="$PWD/target/debug/bilge" bash scripts/check-bundle.sh
fi

say "all checks passed"
