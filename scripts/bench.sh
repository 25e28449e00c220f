#!/usr/bin/env bash
# bilge's side-by-side benchmark (issue 6). On this Debian machine, as root, it:
#   1. installs what it needs (wrk, hyperfine, prometheus-node-exporter, docker.io, busybox-static
#      from Debian; docuum from crates.io) and builds bilge in release mode;
#   2. starts a private dockerd on a loop filesystem under a temporary directory;
#   3. runs each section, anchor and bilge back to back in one run, and keeps every raw figure in
#      target/bench/SECTION.tsv;
#   4. renders BENCHMARKS.md from those figures (scripts/bench_report.py);
#   5. stops every process it started (by pid) and removes its files, whatever happens.
#
#   sudo scripts/bench.sh                      # every section
#   sudo scripts/bench.sh scrape docker        # some: scrape docker build clean watermark scale
#   sudo scripts/bench.sh render               # only re-render BENCHMARKS.md from target/bench
#
# Only loopback addresses and the private daemon's unix socket are ever targets; every loop is
# bounded in count and time. Nothing here is part of CI and nothing asserts: a missed target is
# reported, not failed.
# The whole script is one brace group, read completely before it runs: editing the file while
# a run is going on does not change that run.
{
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ALL_SECTIONS=(docker scrape build clean watermark scale)
SECTIONS=("$@")
[ "${#SECTIONS[@]}" -gt 0 ] || SECTIONS=("${ALL_SECTIONS[@]}")
for s in "${SECTIONS[@]}"; do
  case " ${ALL_SECTIONS[*]} render " in
    *" $s "*) ;;
    *) echo "scripts/bench.sh: unknown section '$s' (known: ${ALL_SECTIONS[*]} render)" >&2; exit 2 ;;
  esac
done

RESULTS="${BILGE_BENCH_RESULTS:-$ROOT/target/bench}"
OUTPUT="${BILGE_BENCH_OUTPUT:-$ROOT/BENCHMARKS.md}"
TOOLS="${BILGE_BENCH_TOOLS:-$HOME/.cache/bilge-bench}"
DOCUUM="$TOOLS/bin/docuum"
BILGE="$ROOT/target/dist/bilge"
SCRAPE_LATENCY="$ROOT/target/dist/examples/scrape_latency" # examples/scrape_latency.rs
DOCKER=/usr/bin/docker # Debian's CLI: the one with BuildKit
# Scale points and window of section 6 (collection cost against a plain poller).
SCALE_SIZES=(${BILGE_BENCH_SCALE_SIZES:-0 2000 20000})
SCALE_SECONDS="${BILGE_BENCH_SCALE_SECONDS:-600}"
SCALE_FULL="${BILGE_BENCH_SCALE_FULL:-10m}"   # bilge's --docker.full-refresh-interval there
# Scale points of section 2 and runs per figure.
SIZES=(${BILGE_BENCH_SIZES:-0 500 2000})
RUNS="${BILGE_BENCH_RUNS:-3}"
STREAM_RUNS="${BILGE_BENCH_STREAM_RUNS:-5}"
WRK_SECONDS="${BILGE_BENCH_WRK_SECONDS:-10}"
mkdir -p "$RESULTS"

say() { printf '\n==> %s\n' "$*" >&2; }
calc() { awk "BEGIN { printf \"%.6f\", $* }"; }
now_ns() { date +%s%N; }

if [ "${SECTIONS[*]}" = render ]; then
  python3 scripts/bench_report.py "$RESULTS" "$OUTPUT"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "scripts/bench.sh: run as root (it starts dockerd and mounts loop filesystems)" >&2
  exit 1
fi

# ---- 1. tools -----------------------------------------------------------------------------
declare -A NEED=(
  [/usr/bin/wrk]=wrk
  [/usr/bin/hyperfine]=hyperfine
  [/usr/bin/prometheus-node-exporter]=prometheus-node-exporter
  [/usr/sbin/dockerd]=docker.io
  [/usr/bin/docker]=docker.io
  [/bin/busybox]=busybox-static
  [/sbin/mkfs.ext4]=e2fsprogs
  [/usr/bin/curl]=curl
  [/usr/bin/jq]=jq
  [/usr/bin/perf]=linux-perf
)
missing=()
for bin in "${!NEED[@]}"; do
  [ -x "$bin" ] || missing+=("${NEED[$bin]}")
done
command -v python3 >/dev/null || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  say "installing Debian packages: $pkgs"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q $pkgs
fi
if [ ! -x "$DOCUUM" ] && [[ " ${SECTIONS[*]} " == *" watermark "* ]]; then
  say "installing docuum from crates.io into $TOOLS (a few minutes of compiling, once)"
  t0=$(date +%s)
  nice -n 10 cargo install docuum --locked --root "$TOOLS"
  echo "docuum installed in $(( $(date +%s) - t0 ))s" >&2
fi
say "cargo build --profile dist (as shipped)"
nice -n 10 cargo build --profile dist --locked --bins --example scrape_latency
[ -x "$BILGE" ] || { echo "no $BILGE after cargo build" >&2; exit 1; }
[ -x "$SCRAPE_LATENCY" ] || { echo "no $SCRAPE_LATENCY after cargo build" >&2; exit 1; }

# ---- 2. a temporary directory, and clean-up of everything started -------------------------
BENCH=$(mktemp -d /tmp/bilge-bench.XXXXXX)
PIDS=()      # every background process this script started
DAEMONS=()   # "pid dir" of every dockerd
cleanup() {
  local rc=$?
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  done
  for d in "${DAEMONS[@]}"; do
    local pid=${d%% *} dir=${d#* }
    ids=$(DOCKER_HOST="unix://$dir/docker.sock" $DOCKER ps -q 2>/dev/null)
    # shellcheck disable=SC2086
    [ -n "$ids" ] && DOCKER_HOST="unix://$dir/docker.sock" $DOCKER kill $ids >/dev/null 2>&1
    kill "$pid" 2>/dev/null
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  done
  # Whatever is still running from this bench's paths (shims, build steps): by pid.
  for p in /proc/[0-9]*; do
    if { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF "$BENCH/"; then
      kill -9 "${p#/proc/}" 2>/dev/null
    fi
  done
  grep -oE " $BENCH[^ ]* " /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$BENCH"
  exit $rc
}
trap cleanup EXIT INT TERM

# bg NAME CMD...: starts CMD in the background, logging to $BENCH/NAME.log; sets BG_PID.
bg() {
  local name=$1
  shift
  "$@" >"$BENCH/$name.log" 2>&1 &
  BG_PID=$!
  PIDS+=("$BG_PID")
}
# stop PID: SIGTERM, then SIGKILL after 10 s.
stop() {
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
# wait_http URL [SECONDS]: until URL answers 200.
wait_http() {
  local url=$1 limit=${2:-60}
  for _ in $(seq $((limit * 10))); do
    curl -sf -o /dev/null "$url" && return 0
    sleep 0.1
  done
  echo "timed out waiting for $url" >&2
  return 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Resident memory of a pid, in MiB.
rss_mib() { awk '/^VmRSS:/ { printf "%.2f", $2 / 1024 }' "/proc/$1/status"; }
# User+system CPU of a pid, in seconds.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }
# The value of one sample in Prometheus text from URL (exact series name, labels included).
metric() { curl -sf "$1" | awk -v s="$2" '$1 == s { v = $2 } END { print v }'; }

# ---- results ------------------------------------------------------------------------------
# Each section writes target/bench/SECTION.tsv (metric, subject, value per line) and
# SECTION.md (the exact commands and notes); the renderer computes medians and ratios.
begin_section() {
  SEC=$1
  : >"$RESULTS/$SEC.tsv"
  : >"$RESULTS/$SEC.md"
  emit date - "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  say "section $SEC"
}
emit() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS/$SEC.tsv"; }
note() { printf '%s\n' "$*" >>"$RESULTS/$SEC.md"; }
cmds() { { echo '```sh'; printf '%s\n' "$@"; echo '```'; } >>"$RESULTS/$SEC.md"; }
skip_section() { emit skipped - "$1"; echo "skipped: $1" >&2; }

machine() {
  {
    printf 'date\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'cpu\t%s\n' "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    printf 'cores\t%s\n' "$(nproc)"
    printf 'memory\t%s\n' "$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    printf 'kernel\t%s\n' "$(uname -r)"
    printf 'os\t%s\n' "$(. /etc/os-release && echo "$PRETTY_NAME")"
    printf 'load\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'bilge\t%s\n' "$("$BILGE" --version 2>/dev/null | head -1) ($(git rev-parse --short HEAD 2>/dev/null))"
    printf 'docker\t%s\n' "$(/usr/sbin/dockerd --version)"
    printf 'node_exporter\t%s\n' "$(prometheus-node-exporter --version 2>&1 | head -1)"
    printf 'wrk\t%s\n' "$(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
    printf 'hyperfine\t%s\n' "$(hyperfine --version)"
    [ -x "$DOCUUM" ] && printf 'docuum\t%s\n' "$("$DOCUUM" --version 2>&1 | head -1)"
    true
  } >"$RESULTS/machine.tsv"
}
machine

# ---- Docker daemons -----------------------------------------------------------------------
# start_daemon NAME SIZE_MIB [ENGINE_DIR]: a private dockerd whose data root is a fresh ext4 loop
# filesystem (so "bytes used" is the daemon's alone): Debian bookworm's, or with ENGINE_DIR the
# engine scripts/engines.sh unpacked (its dockerd, its containerd first on PATH; the classic image
# store). Sets SOCK, DATA, DHOST and DPID.
start_daemon() {
  local name=$1 size=$2 engine=${3:-} dir="$BENCH/$1"
  mkdir -p "$dir/data"
  truncate -s "${size}M" "$dir/disk.img"
  mkfs.ext4 -q -F "$dir/disk.img"
  mount -o loop "$dir/disk.img" "$dir/data"
  local dockerd=/usr/sbin/dockerd path=$PATH extra=()
  if [ -n "$engine" ]; then
    echo '{"features": {"containerd-snapshotter": false}}' >"$dir/daemon.json"
    dockerd="$engine/usr/sbin/dockerd"
    path="$engine/usr/bin:$engine/usr/sbin:$PATH"
    extra=(--config-file "$dir/daemon.json" --ip6tables=false)
  fi
  PATH="$path" "$dockerd" "${extra[@]}" --host "unix://$dir/docker.sock" --data-root "$dir/data" \
    --exec-root "$dir/exec" --pidfile "$dir/docker.pid" \
    --iptables=false --bridge=none --ip-masq=false >"$dir/dockerd.log" 2>&1 &
  local pid=$!
  DAEMONS+=("$pid $dir")
  SOCK="$dir/docker.sock"
  DATA="$dir/data"
  DHOST="unix://$SOCK"
  DPID=$pid
  for _ in $(seq 300); do
    DOCKER_HOST=$DHOST $DOCKER version >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$dir/dockerd.log" >&2; echo "dockerd died" >&2; return 1; }
    sleep 0.1
  done
  echo "dockerd did not answer in 30 s" >&2
  return 1
}
dk() { DOCKER_HOST=$DHOST DOCKER_BUILDKIT=1 $DOCKER "$@"; }
api() { curl -sf --unix-socket "$SOCK" "$@"; }
API=http://docker/v1.41
# Used bytes of the daemon's data root filesystem (statvfs, as df computes it).
used_bytes() { df -B1 --output=used "$DATA" | tail -1 | tr -d ' '; }
avail_bytes() { df -B1 --output=avail "$DATA" | tail -1 | tr -d ' '; }

# A Dockerfile context: FROM scratch, busybox installed, then the given lines.
context() {
  local dir=$1
  shift
  mkdir -p "$dir"
  cp /bin/busybox "$dir/busybox"
  {
    echo 'FROM scratch'
    echo 'COPY busybox /bin/busybox'
    echo 'RUN ["/bin/busybox", "--install", "-s", "/bin"]'
    printf '%s\n' "$@"
  } >"$dir/Dockerfile"
}
base_image() {
  dk image inspect bench/base >/dev/null 2>&1 && return 0
  context "$BENCH/ctx-base"
  dk build --network none -q -t bench/base "$BENCH/ctx-base" >/dev/null
}

# Counts of each object type /system/df reports: "images containers volumes build_cache".
df_counts() {
  api "$API/system/df" | jq -r '[(.Images|length), (.Containers|length), (.Volumes|length), (.BuildCache|length)] | @tsv'
}

# ---- population (section 2) ---------------------------------------------------------------
# populate TOTAL: brings the daemon to about TOTAL objects, a quarter of each type: containers
# created but never started, volumes holding three small files, images imported from tiny
# tarballs (FROM-scratch images with one layer), and BuildKit build cache records (builds of
# 49 unique COPY steps and one unique RUN step each, exported to /dev/null so they add no
# image). Everything is made in parallel batches through the API socket.
POP_C=0 POP_V=0 POP_I=0
populate() {
  local q=$(($1 / 4))
  [ "$q" -gt 0 ] || return 0
  base_image
  if [ "$POP_C" -lt "$q" ]; then
    seq $((POP_C + 1)) "$q" | nice -n 10 xargs -P4 -I{} curl -sf --unix-socket "$SOCK" -o /dev/null \
      -H 'Content-Type: application/json' -d '{"Image":"bench/base","Cmd":["/bin/true"]}' \
      "$API/containers/create?name=bench-c{}"
    POP_C=$q
  fi
  if [ "$POP_V" -lt "$q" ]; then
    seq $((POP_V + 1)) "$q" | SOCK=$SOCK API=$API DATA=$DATA nice -n 10 xargs -P4 -I{} sh -c '
      curl -sf --unix-socket "$SOCK" -o /dev/null -H "Content-Type: application/json" \
        -d "{\"Name\":\"bench-v$1\"}" "$API/volumes/create" &&
      d="$DATA/volumes/bench-v$1/_data" &&
      printf "%01000d" "$1" >"$d/a" && printf "%02000d" "$1" >"$d/b" && printf "%04000d" "$1" >"$d/c"' _ {}
    POP_V=$q
  fi
  if [ "$POP_I" -lt "$q" ]; then
    mkdir -p "$BENCH/imports"
    seq $((POP_I + 1)) "$q" | SOCK=$SOCK API=$API T="$BENCH/imports" nice -n 10 xargs -P4 -I{} sh -c '
      mkdir -p "$T/$1" && printf "image %s\n" "$1" >"$T/$1/id" &&
      tar -C "$T/$1" -cf - id | curl -sf --unix-socket "$SOCK" -o /dev/null -X POST \
        -H "Content-Type: application/x-tar" --data-binary @- \
        "$API/images/create?fromSrc=-&repo=bench/img&tag=$1"' _ {}
    POP_I=$q
  fi
  local have builds k
  have=$(df_counts | cut -f4)
  if [ "$have" -lt "$q" ]; then
    builds=$(((q - have + 49) / 50))
    for k in $(seq "$builds"); do
      local c="$BENCH/cache/$1-$k"
      mkdir -p "$c"
      for j in $(seq 49); do echo "$1-$k-$j" >"$c/f$j"; done
      {
        echo 'FROM bench/base'
        for j in $(seq 49); do echo "COPY f$j /f$j"; done
        echo "RUN echo $1-$k >/run-$1-$k"
      } >"$c/Dockerfile"
    done
    # shellcheck disable=SC2016
    seq "$builds" | DOCKER_HOST=$DHOST DOCKER_BUILDKIT=1 D=$DOCKER C="$BENCH/cache/$1" nice -n 10 \
      xargs -P2 -I{} sh -c '$D build --network none -q -o type=tar,dest=/dev/null "$C-$1" >/dev/null' _ {}
  fi
}

# ---- section 2: Docker collection at scale --------------------------------------------------
# For each size: the raw GET /system/df (curl's own time_total, no process start-up counted)
# against bilge's bilge_collector_duration_seconds{collector="docker"} (one collection: /info,
# /version, /system/df, log file sizes), interleaved one after the other. Then, at the largest
# size, wrk against /metrics while collections run back to back.
section_docker() {
  begin_section docker
  local samples=${BILGE_BENCH_COLLECTIONS:-7}
  cmds "curl -s -o /dev/null -w '%{time_total}' --unix-socket \$SOCK 'http://docker/v1.41/system/df?verbose=1'" \
    "bilge serve --docker.host unix://\$SOCK --docker.refresh-interval \${INTERVAL} ...   # then read bilge_collector_duration_seconds{collector=\"docker\"} after each collection" \
    "hyperfine -N --runs $RUNS 'curl -s -o /dev/null --unix-socket \$SOCK http://docker/v1.41/system/df?verbose=1' 'bilge df --json --docker.host unix://\$SOCK'"
  note "Population per size: a quarter each of containers created but never started, volumes holding three small files, images imported from tiny FROM-scratch tarballs, and BuildKit build cache records (builds of 49 unique COPY steps and one unique RUN step). Raw and bilge samples alternate, one right after the other, $samples of each per size; the refresh interval is set to at least four times the raw call so they never overlap."
  local n
  for n in "${SIZES[@]}"; do
    say "populating to $n objects"
    local t0 t1
    t0=$(date +%s)
    populate "$n"
    t1=$(date +%s)
    read -r ci cc cv cb <<<"$(df_counts)"
    emit "objects@$n" bilge "$((ci + cc + cv + cb))"
    emit "populate_s@$n" bilge "$((t1 - t0))"
    note "- size $n: $ci images, $cc containers, $cv volumes, $cb build cache records ($((ci + cc + cv + cb)) objects; populated in $((t1 - t0)) s)"
    local raw interval port dir pid
    raw=$(curl -s -o /dev/null -w '%{time_total}' --unix-socket "$SOCK" "$API/system/df?verbose=1")
    interval=$(awk -v r="$raw" 'BEGIN { i = r * 4 + 0.5; if (i < 1) i = 1; printf "%d", i + 0.999 }')
    port=$(free_port)
    dir="$BENCH/serve-$n"
    mkdir -p "$dir"
    # Every collection full (--docker.full-refresh-interval 0, no budget to space them out): one
    # collection is compared with the raw call it makes; the ones between full collections that
    # ask only what changed are section 6's subject.
    bg "bilge-docker-$n" "$BILGE" serve --web.listen-address "127.0.0.1:$port" --docker.host "$DHOST" \
      --state.path "$dir/bilge.db" --docker.refresh-interval "${interval}s" \
      --docker.full-refresh-interval 0 --docker.df-budget 100% --docker.footprint-interval 0 \
      --log.level warn
    pid=$BG_PID
    local url="http://127.0.0.1:$port/metrics"
    wait_http "http://127.0.0.1:$port/-/ready" 120
    emit "first_collect_s@$n" bilge "$(metric "$url" 'bilge_collector_duration_seconds{collector="docker"}')"
    local last k ts d
    last=$(metric "$url" 'bilge_collector_last_success_timestamp_seconds{collector="docker"}')
    for k in $(seq "$samples"); do
      # The next collection: at most two intervals away.
      for _ in $(seq $((interval * 2 * 50 + 100))); do
        ts=$(metric "$url" 'bilge_collector_last_success_timestamp_seconds{collector="docker"}')
        [ "$ts" != "$last" ] && break
        sleep 0.02
      done
      last=$ts
      d=$(metric "$url" 'bilge_collector_duration_seconds{collector="docker"}')
      raw=$(curl -s -o /dev/null -w '%{time_total}' --unix-socket "$SOCK" "$API/system/df?verbose=1")
      emit "collect_ms@$n" bilge "$(calc "$d * 1000")"
      emit "collect_ms@$n" raw "$(calc "$raw * 1000")"
    done
    stop "$pid"
    # What else one collection asks the daemon: /info and /version (the profile of the gap).
    for k in $(seq "$samples"); do
      emit "info_ms@$n" raw "$(calc "$(curl -s -o /dev/null -w '%{time_total}' --unix-socket "$SOCK" "$API/info") * 1000")"
      emit "version_ms@$n" raw "$(calc "$(curl -s -o /dev/null -w '%{time_total}' --unix-socket "$SOCK" "$API/version") * 1000")"
    done
    # bilge df as a command: a fresh process, one collection including a first look at every
    # container's log path.
    hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$BENCH/df-$n.json" \
      "curl -s -o /dev/null --unix-socket $SOCK $API/system/df?verbose=1" \
      "$BILGE df --json --docker.host $DHOST --state.path $dir/df.db" >/dev/null
    jq -r '.results[0].times[]' "$BENCH/df-$n.json" | while read -r t; do emit "df_cmd_ms@$n" raw "$(calc "$t * 1000")"; done
    jq -r '.results[1].times[]' "$BENCH/df-$n.json" | while read -r t; do emit "df_cmd_ms@$n" bilge "$(calc "$t * 1000")"; done
  done

  # Scrapes while a collection is in flight: the refresh interval is below one collection's
  # duration, so collections run back to back for the whole wrk run.
  local top=${SIZES[-1]}
  say "scrape latency with collections in flight ($top objects)"
  local port dir
  port=$(free_port)
  dir="$BENCH/serve-inflight"
  mkdir -p "$dir"
  bg bilge-inflight "$BILGE" serve --web.listen-address "127.0.0.1:$port" --docker.host "$DHOST" \
    --state.path "$dir/bilge.db" --docker.refresh-interval 100ms --docker.full-refresh-interval 0 \
    --docker.df-budget 100% --docker.footprint-interval 0 --log.level warn
  local pid=$BG_PID
  wait_http "http://127.0.0.1:$port/-/ready" 120
  cmds "bilge serve --docker.refresh-interval 100ms --docker.full-refresh-interval 0 --docker.df-budget 100% ...   # full collections back to back" \
    "scrape_latency 127.0.0.1:\$PORT /metrics ${WRK_SECONDS}       # examples/scrape_latency.rs: one scraper, as Prometheus scrapes a target" \
    "scrape_latency 127.0.0.1:\$PORT /-/healthy ${WRK_SECONDS}     # control" \
    "scrape_latency 127.0.0.1:\$PORT /metrics ${WRK_SECONDS} 16    # saturating load" \
    "scrape_latency 127.0.0.1:\$PORT /-/healthy ${WRK_SECONDS} 16  # control, after each run" \
    "wrk -t1 -c1 -d${WRK_SECONDS}s -s scripts/bench_wrk.lua http://127.0.0.1:\$PORT/metrics   # wrk's figure for the one scraper, beside it"
  note "Latency here is measured by \`examples/scrape_latency.rs\`, which times every request on the monotonic clock and keeps every sample. wrk's own figure for the same one-scraper load is kept beside it with a check: with one connection the requests follow one another, so their latencies cannot add up to more than the run. wrk's do on this machine while dockerd computes \`/system/df\` (the check row is over 1), so its percentiles there are not the scrapes' latency."
  for _ in $(seq "$RUNS"); do
    local out d
    # One connection, scrapes back to back: the latency a Prometheus scraping this target sees
    # (it keeps one connection per target), with collections taking their share of the CPU.
    out=$("$SCRAPE_LATENCY" "127.0.0.1:$port" /metrics "$WRK_SECONDS")
    emit "inflight1_p99_ms@$top" bilge "$(ms_of "$out" p99_us)"
    emit "inflight1_p50_ms@$top" bilge "$(ms_of "$out" p50_us)"
    out=$("$SCRAPE_LATENCY" "127.0.0.1:$port" /-/healthy "$WRK_SECONDS")
    emit "inflight1_control_p99_ms@$top" bilge "$(ms_of "$out" p99_us)"
    out=$(wrk -t1 -c1 -d"${WRK_SECONDS}s" -s scripts/bench_wrk.lua "http://127.0.0.1:$port/metrics" | grep '^WRK ')
    emit "inflight1_wrk_p99_ms@$top" bilge "$(ms_of "$out" p99_us)"
    emit "inflight1_wrk_busy@$top" bilge "$(awk -v m="$(field_of "$out" mean_us)" -v r="$(field_of "$out" requests)" -v d="$(field_of "$out" duration_us)" 'BEGIN { printf "%.3f", m * r / d }')"
    out=$("$SCRAPE_LATENCY" "127.0.0.1:$port" /metrics "$WRK_SECONDS" 16)
    d=$(metric "http://127.0.0.1:$port/metrics" 'bilge_collector_duration_seconds{collector="docker"}')
    emit "inflight_p99_ms@$top" bilge "$(ms_of "$out" p99_us)"
    emit "inflight_p50_ms@$top" bilge "$(ms_of "$out" p50_us)"
    emit "inflight_req_s@$top" bilge "$(rate_of "$out")"
    emit "inflight_collect_ms@$top" bilge "$(calc "$d * 1000")"
    # Control: the same load on a constant answer, to tell bilge's share from the machine's.
    out=$("$SCRAPE_LATENCY" "127.0.0.1:$port" /-/healthy "$WRK_SECONDS" 16)
    emit "inflight_control_p99_ms@$top" bilge "$(ms_of "$out" p99_us)"
  done
  # One more run, not counted, under perf: the whole machine, to show who shares the CPU.
  profile inflight all 8 &
  local ppid=$!
  wrk -t2 -c16 -d"${WRK_SECONDS}s" "http://127.0.0.1:$port/metrics" >/dev/null
  wait "$ppid" || true
  stop "$pid"
}

# ---- section 6: collection cost at scale, against a plain poller -----------------------------
# For each size, on Debian's newest engine: three windows of SCALE_SECONDS with the same trickle of
# changes (a tagged build or a container start every 30 s): nothing polling (the trickle's own
# cost), bilge serve at its defaults, and a control that asks /system/df?verbose=1 every 60 s.
# The daemon's CPU (utime+stime of dockerd and containerd) over each window; a poller's cost is its
# window less the trickle-only one. Then bilge's figures against docker system df: right after the
# trickle (drift before a full reconciliation), and after the next full one.
# trickle WINDOW: the changes of one window, named after it, so that each window's builds are new
# (not cache hits that tag an image again) and its containers start (no name taken by an earlier
# window's).
trickle() {
  local w=$1 i=0
  while :; do
    i=$((i + 1))
    if [ $((i % 2)) = 1 ]; then
      context "$BENCH/ctx-trickle-$w-$i" "RUN echo $w $i >/t"
      dk build --network none -q -t "bench/trickle-$w:$i" "$BENCH/ctx-trickle-$w-$i" >/dev/null 2>&1 || true
    else
      dk run -d --network none --name "bench-t-$w-$i" bench/base sleep 100000 >/dev/null 2>&1 || true
    fi
    sleep 30
  done
}
daemon_cpu() {
  local total=0 p
  for p in $DPID $(pgrep -P "$DPID" 2>/dev/null); do
    total=$(calc "$total + $(cpu_s "$p" 2>/dev/null || echo 0)")
  done
  echo "$total"
}
# call_cpu N PATH: the daemon's CPU seconds per GET of PATH (API 1.51), over N calls in a row.
call_cpu() {
  local n=$1 path=$2 c0 c1
  c0=$(daemon_cpu)
  for _ in $(seq "$n"); do
    curl -s -o /dev/null --unix-socket "$SOCK" "http://docker/v1.51$path"
  done
  c1=$(daemon_cpu)
  calc "($c1 - $c0) / $n"
}
# scale_drift URL: the largest relative difference, in %, between bilge's size figures and
# docker system df's (each type's size and reclaimable), and the count figures that differ.
scale_drift() {
  local m
  m=$(curl -sf "$1")
  dk system df --format '{{json .}}' | python3 -c '
import json, sys
m = {}
for line in sys.argv[1].splitlines():
    if line.startswith("#") or " " not in line:
        continue
    k, v = line.rsplit(" ", 1)
    m[k] = float(v)
units = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
def size(s):
    s = s.split()[0]
    i = next(i for i, c in enumerate(s) if c.isalpha())
    return float(s[:i]) * units[s[i:]]
kinds = {"Images": "image", "Containers": "container", "Local Volumes": "volume", "Build Cache": "build_cache"}
worst, counts = 0.0, 0
for line in sys.stdin:
    row = json.loads(line)
    t = kinds[row["Type"]]
    if m.get(f"bilge_docker_objects{{type=\"{t}\"}}") != float(row["TotalCount"]):
        counts += 1
    for fam, k in (("bilge_docker_size_bytes", "Size"), ("bilge_docker_reclaimable_bytes", "Reclaimable")):
        ours, theirs = m.get(f"{fam}{{type=\"{t}\"}}", 0.0), size(row[k])
        # The CLI prints four significant digits: within its rounding is no drift.
        if abs(ours - theirs) > max(theirs * 0.0005, 1e3 if theirs < 1e6 else 0):
            worst = max(worst, abs(ours - theirs) / max(theirs, 1.0) * 100)
print(f"{worst:.3f} {counts}")' "$m"
}
section_scale() {
  begin_section scale
  local engine main_sock=$SOCK main_data=$DATA main_host=$DHOST
  engine=$(scripts/engines.sh)
  POP_C=0 POP_V=0 POP_I=0
  start_daemon scale 20480 "$engine"
  emit engine - "$(DOCKER_HOST=$DHOST $DOCKER version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"
  cmds "bilge serve --docker.host unix://\$SOCK   # the defaults: --docker.refresh-interval 60s, --docker.full-refresh-interval 10m" \
    "while :; do curl -s -o /dev/null --unix-socket \$SOCK http://docker/v1.51/system/df?verbose=1; sleep 60; done   # the control" \
    "trickle: every 30 s a tagged build (docker build -t …) or a container start (docker run -d … sleep), in all three windows"
  note "Each size runs three windows of $SCALE_SECONDS s with the same trickle: nothing polling, bilge serve at its defaults with --docker.full-refresh-interval $SCALE_FULL (from its start, so its first full collection counts), and the control. Daemon CPU is dockerd's and its children's (containerd, shims) utime+stime over the window; each poller's cost is its window less the trickle-only one. Drift is the largest relative difference between bilge's size and reclaimable figures and docker system df's (within the CLI's four-digit rounding counts as none), with the count figures that differ; once right after the last change, once after the next full collection."
  local n
  for n in "${SCALE_SIZES[@]}"; do
    say "scale: populating to $n objects"
    base_image # what the trickle's containers run, at size 0 too
    populate "$n"
    read -r ci cc cv cb <<<"$(df_counts)"
    emit "objects@$n" bilge "$((ci + cc + cv + cb))"
    local c0 c1 tp port dir pid url
    # The trickle alone.
    trickle "alone-$n" & tp=$!
    PIDS+=("$tp")
    c0=$(daemon_cpu); sleep "$SCALE_SECONDS"; c1=$(daemon_cpu)
    kill "$tp" 2>/dev/null; wait "$tp" 2>/dev/null || true
    emit "daemon_cpu_s@$n" trickle "$(calc "$c1 - $c0")"
    # bilge at its defaults.
    port=$(free_port)
    dir="$BENCH/serve-scale-$n"
    mkdir -p "$dir"
    url="http://127.0.0.1:$port/metrics"
    trickle "bilge-$n" & tp=$!
    PIDS+=("$tp")
    c0=$(daemon_cpu)
    bg "bilge-scale-$n" "$BILGE" serve --web.listen-address "127.0.0.1:$port" --docker.host "$DHOST" \
      --state.path "$dir/bilge.db" --docker.full-refresh-interval "$SCALE_FULL" --log.level warn
    pid=$BG_PID
    sleep "$SCALE_SECONDS"
    c1=$(daemon_cpu)
    kill "$tp" 2>/dev/null; wait "$tp" 2>/dev/null || true
    emit "daemon_cpu_s@$n" bilge "$(calc "$c1 - $c0")"
    emit "bilge_cpu_s@$n" bilge "$(cpu_s "$pid")"
    emit "rss_mib@$n" bilge "$(rss_mib "$pid")"
    local k
    for k in full partial unchanged; do
      emit "collections_$k@$n" bilge "$(metric "$url" "bilge_docker_collections_total{kind=\"$k\"}")"
    done
    emit "collections_deferred@$n" bilge "$(metric "$url" bilge_docker_collections_deferred_total)"
    # Drift once the last change is collected (the next collection after it), then after the
    # next full one.
    local last ts full0
    last=$(metric "$url" 'bilge_collector_last_success_timestamp_seconds{collector="docker"}')
    for _ in $(seq 1300); do
      ts=$(metric "$url" 'bilge_collector_last_success_timestamp_seconds{collector="docker"}')
      [ "$ts" != "$last" ] && break
      sleep 0.1
    done
    read -r dpct dcount <<<"$(scale_drift "$url")"
    emit "drift_pct@$n" bilge "$dpct"
    emit "drift_counts@$n" bilge "$dcount"
    full0=$(metric "$url" 'bilge_docker_collections_total{kind="full"}')
    for _ in $(seq 7000); do
      [ "$(metric "$url" 'bilge_docker_collections_total{kind="full"}')" != "$full0" ] && break
      sleep 0.1
    done
    read -r dpct dcount <<<"$(scale_drift "$url")"
    emit "drift_full_pct@$n" bilge "$dpct"
    emit "drift_full_counts@$n" bilge "$dcount"
    stop "$pid"
    # The control.
    trickle "control-$n" & tp=$!
    PIDS+=("$tp")
    c0=$(daemon_cpu)
    local t_end=$(( $(date +%s) + SCALE_SECONDS ))
    while [ "$(date +%s)" -lt "$t_end" ]; do
      curl -s -o /dev/null --unix-socket "$SOCK" "http://docker/v1.51/system/df?verbose=1"
      local left=$(( t_end - $(date +%s) ))
      [ "$left" -gt 60 ] && left=60
      [ "$left" -gt 0 ] && sleep "$left"
    done
    c1=$(daemon_cpu)
    kill "$tp" 2>/dev/null; wait "$tp" 2>/dev/null || true
    emit "daemon_cpu_s@$n" raw "$(calc "$c1 - $c0")"
    # What one call of each kind costs the daemon, the trickle stopped: the control's poll, the
    # partial collection of a tagged build (images and build cache), that of a container change
    # (one inspection) and that of no change (a ping).
    emit "call_cpu_s@$n" raw "$(call_cpu 5 '/system/df?verbose=1')"
    emit "call_build_cpu_s@$n" bilge "$(call_cpu 5 '/system/df?verbose=1&type=image&type=build-cache')"
    # ... and its two halves, to say where that floor is.
    emit "call_image_cpu_s@$n" bilge "$(call_cpu 5 '/system/df?verbose=1&type=image')"
    emit "call_cache_cpu_s@$n" bilge "$(call_cpu 5 '/system/df?verbose=1&type=build-cache')"
    local cid
    cid=$(dk ps -aq --no-trunc --last 1) # (not `| head -1`: under pipefail the cut-off ps fails the run)
    [ -n "$cid" ] && emit "call_container_cpu_s@$n" bilge "$(call_cpu 50 "/containers/$cid/json?size=1")"
    emit "call_ping_cpu_s@$n" bilge "$(call_cpu 50 '/_ping')"
    # The pollers' own share: their window less the trickle's.
    local tr bi co
    tr=$(awk -F'\t' -v m="daemon_cpu_s@$n" '$1 == m && $2 == "trickle" { print $3 }' "$RESULTS/$SEC.tsv" | tail -1)
    bi=$(awk -F'\t' -v m="daemon_cpu_s@$n" '$1 == m && $2 == "bilge" { print $3 }' "$RESULTS/$SEC.tsv" | tail -1)
    co=$(awk -F'\t' -v m="daemon_cpu_s@$n" '$1 == m && $2 == "raw" { print $3 }' "$RESULTS/$SEC.tsv" | tail -1)
    # (Parenthesized whole: a bare > in awk's printf arguments is a redirection.)
    emit "poller_cpu_s@$n" bilge "$(calc "(($bi - $tr) > 0 ? ($bi - $tr) : 0)")"
    emit "poller_cpu_s@$n" raw "$(calc "(($co - $tr) > 0 ? ($co - $tr) : 0)")"
  done
  SOCK=$main_sock DATA=$main_data DHOST=$main_host
}

# profile NAME PID SECONDS: a flat perf profile of PID (and its threads), top symbols, kept as
# target/bench/profile-NAME.txt for BENCHMARKS.md. Taken on extra runs that are not counted.
profile() {
  command -v perf >/dev/null || return 0
  local target=(-p "$2")
  [ "$2" = all ] && target=(-a)
  perf record -q -F 999 "${target[@]}" -o "$BENCH/$1.perf" -- sleep "$3" >/dev/null 2>&1 || return 0
  perf_top "$1"
}
perf_top() {
  {
    echo "by process (thread name):"
    perf report -i "$BENCH/$1.perf" --no-children --sort comm --stdio 2>/dev/null |
      grep -v '^#' | grep -v '^$' | head -8
    echo "top symbols:"
    perf report -i "$BENCH/$1.perf" --no-children --sort comm,dso,sym --percent-limit 1.5 --stdio 2>/dev/null |
      grep -v '^#' | grep -v '^$' | head -20
  } | sed 's/ \+$//' >"$RESULTS/profile-$1.txt" || true
}

# field_of "WRK k=v ..." KEY: one field of a wrk (scripts/bench_wrk.lua) or scrape_latency line;
# ms_of: a field in microseconds, as milliseconds; rate_of: requests per second.
field_of() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
ms_of() { field_of "$1" "$2" | awk '{ printf "%.3f", $1 / 1000 }'; }
rate_of() { awk -v r="$(field_of "$1" requests)" -v d="$(field_of "$1" duration_us)" 'BEGIN { printf "%.1f", r / (d / 1e6) }'; }

# ---- section 1: scrape --------------------------------------------------------------------
# wrk, 16 connections for WRK_SECONDS, RUNS times against each exporter, alternating which goes
# first. CPU is the server's utime+stime over the run, per 1,000 answered scrapes; RSS is read
# right after each run.
section_scrape() {
  begin_section scrape
  local pb pn dir
  pb=$(free_port)
  pn=$(free_port)
  dir="$BENCH/scrape"
  mkdir -p "$dir"
  bg bilge-scrape "$BILGE" serve --web.listen-address "127.0.0.1:$pb" --docker.host "$DHOST" \
    --state.path "$dir/bilge.db" --log.level warn
  local bpid=$BG_PID
  bg node-exporter prometheus-node-exporter --web.listen-address="127.0.0.1:$pn" \
    --collector.disable-defaults --collector.filesystem --log.level=warn
  local npid=$BG_PID
  wait_http "http://127.0.0.1:$pb/-/ready" 120
  wait_http "http://127.0.0.1:$pn/metrics" 30
  cmds "bilge serve --web.listen-address 127.0.0.1:\$PB --docker.host unix://\$SOCK --log.level warn" \
    "prometheus-node-exporter --web.listen-address=127.0.0.1:\$PN --collector.disable-defaults --collector.filesystem" \
    "wrk -t2 -c16 -d${WRK_SECONDS}s -s scripts/bench_wrk.lua http://127.0.0.1:\$PORT/metrics   # $RUNS times each, alternating"
  local objects
  read -r ci cc cv cb <<<"$(df_counts)"
  objects=$((ci + cc + cv + cb))
  note "bilge serves from its last snapshot of the private daemon ($objects Docker objects), refreshed every 60 s (the default); node_exporter stats every filesystem on each scrape. Both see the same mounts. CPU is the server's user+system time over the run (from /proc/PID/stat), per 1,000 answered scrapes; RSS is VmRSS right after each run."
  for who in node_exporter bilge; do
    local port=$pn
    [ "$who" = bilge ] && port=$pb
    local body
    body=$(curl -sf "http://127.0.0.1:$port/metrics")
    emit body_bytes "$who" "$(printf '%s' "$body" | wc -c)"
    emit series "$who" "$(printf '%s\n' "$body" | grep -vc '^#')"
  done
  local r
  for r in $(seq "$RUNS"); do
    local order=(node_exporter bilge)
    [ $((r % 2)) -eq 0 ] && order=(bilge node_exporter)
    for who in "${order[@]}"; do
      local port=$pn pid=$npid
      [ "$who" = bilge ] && port=$pb pid=$bpid
      local c0 c1 out req
      c0=$(cpu_s "$pid")
      out=$(wrk -t2 -c16 -d"${WRK_SECONDS}s" -s scripts/bench_wrk.lua "http://127.0.0.1:$port/metrics" | grep '^WRK ')
      c1=$(cpu_s "$pid")
      req=$(field_of "$out" requests)
      emit req_s "$who" "$(rate_of "$out")"
      emit p50_ms "$who" "$(ms_of "$out" p50_us)"
      emit p99_ms "$who" "$(ms_of "$out" p99_us)"
      emit errors "$who" "$(field_of "$out" errors)"
      emit cpu_s_per_1k "$who" "$(calc "($c1 - $c0) / ($req / 1000)")"
      emit rss_mib "$who" "$(rss_mib "$pid")"
      emit rss_anon_mib "$who" "$(awk '/^RssAnon:/ { printf "%.2f", $2 / 1024 }' "/proc/$pid/status")"
      emit rss_file_mib "$who" "$(awk '/^RssFile:/ { printf "%.2f", $2 / 1024 }' "/proc/$pid/status")"
    done
  done
  # One more run on each, not counted, under perf.
  local ppid
  profile scrape-bilge "$bpid" 8 &
  ppid=$!
  wrk -t2 -c16 -d"${WRK_SECONDS}s" "http://127.0.0.1:$pb/metrics" >/dev/null
  wait "$ppid" || true
  profile scrape-node_exporter "$npid" 8 &
  ppid=$!
  wrk -t2 -c16 -d"${WRK_SECONDS}s" "http://127.0.0.1:$pn/metrics" >/dev/null
  wait "$ppid" || true
  # The noise floor: the same load on bilge's constant /-/healthy answer (no encoding at all).
  # Its p99 is what scheduling on this shared machine alone adds.
  cmds "wrk -t2 -c16 -d${WRK_SECONDS}s -s scripts/bench_wrk.lua http://127.0.0.1:\$PB/-/healthy   # control, $RUNS times"
  for r in $(seq "$RUNS"); do
    local out
    out=$(wrk -t2 -c16 -d"${WRK_SECONDS}s" -s scripts/bench_wrk.lua "http://127.0.0.1:$pb/-/healthy" | grep '^WRK ')
    emit control_p99_ms bilge "$(ms_of "$out" p99_us)"
    emit control_req_s bilge "$(rate_of "$out")"
  done
  emit load - "$(cut -d' ' -f1-3 /proc/loadavg)"
  stop "$bpid"
  stop "$npid"
}

# ---- section 3: build wrapper overhead ----------------------------------------------------
section_build() {
  begin_section build
  if ! "$BILGE" build --help >/dev/null 2>&1; then
    skip_section "\`bilge build\` does not exist in this checkout yet (branch builds not merged)"
    return 0
  fi
  local dir="$BENCH/build"
  mkdir -p "$dir"
  local wrap="$BILGE build --project bench --state.path $dir/bilge.db --docker.host $DHOST --"
  local stream="head -c 1G /dev/zero | tr \"\\0\" x | fold"
  cmds "hyperfine -N --warmup 3 --runs 30 'true' 'bilge build --project bench -- true'" \
    "hyperfine -N --runs $STREAM_RUNS \"sh -c '$stream'\" \"sh -c '$stream | cat'\" \"bilge build --project bench -- sh -c '$stream'\"   # output to /dev/null (hyperfine's default)" \
    "hyperfine -N --runs $STREAM_RUNS 'cat stream.txt' 'bilge build --project bench -- cat stream.txt'   # the same text from a file in the page cache: bilge is the bottleneck"
  hyperfine -N --warmup 3 --runs 30 --export-json "$dir/fixed.json" "true" "$wrap true" >/dev/null
  jq -r '.results[0].times[]' "$dir/fixed.json" | while read -r t; do emit fixed_ms plain "$(calc "$t * 1000")"; done
  jq -r '.results[1].times[]' "$dir/fixed.json" | while read -r t; do emit fixed_ms bilge "$(calc "$t * 1000")"; done
  # `| cat` is the control: the cheapest wrapper that reads the output and writes it on.
  hyperfine -N --runs "$STREAM_RUNS" --export-json "$dir/stream.json" \
    "sh -c '$stream'" "sh -c '$stream | cat'" "$wrap sh -c '$stream'" >/dev/null
  # head -c 1G, plus the newline fold writes after every 80 columns.
  local bytes=$((1073741824 + 1073741824 / 80))
  note "The stream is $bytes bytes (1 GiB of 'x' plus the newline fold adds every 80 columns). hyperfine sends every command's output to /dev/null. The control \`… | cat\` costs what any wrapper that reads the build's output pays at the least: one more pipe, one more copy in and out of a process. Throughput is the stream's bytes over each run's wall time (MB = 10^6 bytes)."
  jq -r '.results[0].times[]' "$dir/stream.json" | while read -r t; do
    emit stream_s plain "$t"
    emit stream_mb_s plain "$(calc "$bytes / $t / 1e6")"
  done
  jq -r '.results[1].times[]' "$dir/stream.json" | while read -r t; do emit stream_s cat "$t"; done
  jq -r '.results[2].times[]' "$dir/stream.json" | while read -r t; do
    emit stream_s bilge "$t"
    emit stream_mb_s bilge "$(calc "$bytes / $t / 1e6")"
  done
  # One more stream run, not counted, under perf (every process of it: bilge, sh, head, tr, fold).
  if command -v perf >/dev/null; then
    perf record -q -F 999 -o "$BENCH/stream.perf" -- $wrap sh -c "$stream" >/dev/null 2>&1 || true
    perf_top stream
  fi
  # Classification throughput: the same text (a quarter of it) from a file in the page cache, so
  # `cat` is far faster than bilge and bilge's copy-and-classify loop sets the pace.
  head -c 268435456 /dev/zero | tr '\0' x | fold >"$dir/stream.txt"
  local fbytes
  fbytes=$(stat -c %s "$dir/stream.txt")
  cat "$dir/stream.txt" >/dev/null
  hyperfine -N --warmup 1 --runs "$STREAM_RUNS" --export-json "$dir/file.json" \
    "cat $dir/stream.txt" "$wrap cat $dir/stream.txt" >/dev/null
  jq -r '.results[0].times[]' "$dir/file.json" | while read -r t; do emit classify_mb_s plain "$(calc "$fbytes / $t / 1e6")"; done
  jq -r '.results[1].times[]' "$dir/file.json" | while read -r t; do emit classify_mb_s bilge "$(calc "$fbytes / $t / 1e6")"; done
  rm -f "$dir/stream.txt"
  note "Classification throughput: \`bilge build -- cat stream.txt\` on $fbytes bytes of the same text (80-column lines of 'x') read from the page cache, against \`cat\` alone; \`cat\` is far faster, so bilge's copy-and-classify loop sets the pace."
}

# ---- section 4: cleanup -------------------------------------------------------------------
# The same state, made fresh before each timed run: build cache (BuildKit builds of 16 MiB each,
# exported to /dev/null), stopped containers with 1 MiB written each, and dangling images (one
# tag rebuilt with new content).
prepare_cleanup_state() {
  local tag=$1 i
  base_image
  for i in 1 2 3 4; do
    context "$BENCH/ctx/clean-$tag-c$i" "RUN head -c 16777216 /dev/urandom >/cache-$tag-$i"
    context "$BENCH/ctx/clean-$tag-d$i" "RUN head -c 4194304 /dev/urandom >/img-$tag-$i"
  done
  # shellcheck disable=SC2016
  printf '%s\n' 1 2 3 4 | DOCKER_HOST=$DHOST DOCKER_BUILDKIT=1 D=$DOCKER C="$BENCH/ctx/clean-$tag-c" nice -n 10 \
    xargs -P2 -I{} sh -c '$D build --network none -q -o type=tar,dest=/dev/null "$C$1" >/dev/null' _ {}
  # shellcheck disable=SC2016
  seq 8 | DOCKER_HOST=$DHOST D=$DOCKER T=$tag nice -n 10 xargs -P4 -I{} sh -c \
    '$D run --network none --name "clean-$T-$1" bench/base sh -c "head -c 1048576 /dev/urandom >/x" >/dev/null' _ {}
  for i in 1 2 3 4; do
    nice -n 10 env DOCKER_HOST="$DHOST" DOCKER_BUILDKIT=1 $DOCKER build --network none -q \
      -t "bench/dangling-$tag" "$BENCH/ctx/clean-$tag-d$i" >/dev/null
  done
  rm -rf "$BENCH/ctx"
  sync
}

section_clean() {
  begin_section clean
  if ! "$BILGE" clean --help >/dev/null 2>&1; then
    skip_section "\`bilge clean\` does not exist in this checkout yet (branch cleanup not merged)"
    return 0
  fi
  # A daemon of its own: on the main one, Docker's prunes would also sweep section 2's 500
  # never-started containers and build cache on whichever tool went first.
  local main_sock=$SOCK main_data=$DATA main_host=$DHOST
  start_daemon clean 4096
  local dir="$BENCH/clean"
  mkdir -p "$dir"
  cmds "docker builder prune -f && docker container prune -f && docker image prune -f" \
    "bilge clean --level standard --until 0s --target-free 100% --yes --docker.host unix://\$SOCK"
  note "A daemon of its own (4 GiB ext4 loop filesystem). Before every timed run the same state is made afresh: 4 BuildKit builds of 16 MiB each (build cache only), 8 stopped containers that wrote 1 MiB each, and one tag rebuilt 4 times with 4 MiB of new content (3 dangling images). The two tools alternate which goes first. Bytes freed are the filesystem's used bytes before minus after (statvfs, after sync). \`--until 0s\` and \`--target-free 100%\`: bilge's defaults (only objects older than 24 h; stop once 15 % is free) would spare objects made seconds ago and stop early on this roomy filesystem, while Docker's prunes have neither."
  local r
  for r in $(seq "$RUNS"); do
    local order=(docker bilge)
    [ $((r % 2)) -eq 0 ] && order=(bilge docker)
    for who in "${order[@]}"; do
      say "cleanup run $r: $who"
      prepare_cleanup_state "$who$r"
      local u0 u1 t0 t1
      u0=$(used_bytes)
      t0=$(now_ns)
      if [ "$who" = docker ]; then
        dk builder prune -f >/dev/null && dk container prune -f >/dev/null && dk image prune -f >/dev/null
      else
        "$BILGE" clean --level standard --until 0s --target-free 100% --yes --docker.host "$DHOST" \
          --state.path "$dir/bilge.db" >"$dir/clean-$r.log" 2>&1
      fi
      t1=$(now_ns)
      sync
      u1=$(used_bytes)
      emit clean_s "$who" "$(calc "($t1 - $t0) / 1e9")"
      emit freed_mib "$who" "$(calc "($u0 - $u1) / 1048576")"
    done
  done

  # Webhook delivery -> prune start: an Alertmanager payload posted to a running bilge serve;
  # the cleanup record's started_at against the moment the POST was sent.
  local port token="$dir/token" cfg="$dir/webhook.toml"
  head -c 24 /dev/urandom | base64 >"$token"
  printf '[cleanup]\nuntil = "0s"\ncooldown = "0s"\n' >"$cfg"
  port=$(free_port)
  bg bilge-webhook "$BILGE" serve --web.listen-address "127.0.0.1:$port" --docker.host "$DHOST" \
    --state.path "$dir/webhook.db" --webhook.token-file "$token" --config "$cfg" --log.level info
  local pid=$BG_PID
  wait_http "http://127.0.0.1:$port/-/ready" 120
  cmds "# webhook.toml: [cleanup] until = \"0s\", cooldown = \"0s\" (so consecutive deliveries each start a run)" \
    "bilge serve --webhook.token-file token --config webhook.toml ..." \
    "curl -X POST -H 'Authorization: Bearer \$TOKEN' --data @alert.json http://127.0.0.1:\$PORT/api/v1/alerts   # then started_at of /api/v1/cleanups?limit=1"
  note "Webhook latency: the time from sending an Alertmanager v4 payload (one firing alert, \`bilge_action=standard\`, \`instance=127.0.0.1:PORT\`) to the \`started_at\` bilge records for the run it starts; $RUNS deliveries, each on fresh state after the previous run finished."
  for r in $(seq "$RUNS"); do
    prepare_cleanup_state "hook$r"
    local sent body started s_ns
    body=$(alert_payload "127.0.0.1:$port" "bench-$r-$$")
    sent=$(now_ns)
    curl -sf -o "$dir/hook-$r.json" -X POST -H "Authorization: Bearer $(cat "$token")" \
      -H 'Content-Type: application/json' --data "$body" "http://127.0.0.1:$port/api/v1/alerts" || true
    started=""
    for _ in $(seq 600); do
      started=$(curl -sf "http://127.0.0.1:$port/api/v1/cleanups?limit=1" | jq -r '.cleanups[0].started_at // empty')
      if [ -n "$started" ]; then
        s_ns=$(date -d "$started" +%s%N)
        [ "$s_ns" -ge $((sent - 1000000000)) ] && break
      fi
      started=""
      sleep 0.05
    done
    if [ -n "$started" ]; then
      emit webhook_start_ms bilge "$(calc "($s_ns - $sent) / 1e6")"
    else
      echo "webhook run $r: no cleanup started; answer: $(cat "$dir/hook-$r.json" 2>/dev/null)" >&2
    fi
    # Let this run finish before the next delivery.
    for _ in $(seq 600); do
      [ "$(metric "http://127.0.0.1:$port/metrics" bilge_cleanup_in_progress)" = 0 ] && break
      sleep 0.1
    done
  done
  stop "$pid"
  SOCK=$main_sock DATA=$main_data DHOST=$main_host
}

alert_payload() {
  local instance=$1 fp=$2
  printf '%s' '{"version":"4","groupKey":"{}:{alertname=\"DockerDataRootFilling\"}","status":"firing","receiver":"bilge",'
  printf '%s' '"groupLabels":{"alertname":"DockerDataRootFilling"},"commonLabels":{},"commonAnnotations":{},'
  printf '%s' '"externalURL":"http://127.0.0.1:9093","truncatedAlerts":0,'
  printf '"alerts":[{"status":"firing","labels":{"alertname":"DockerDataRootFilling","instance":"%s","bilge_action":"standard","severity":"warning"},' "$instance"
  printf '"annotations":{},"startsAt":"%s","endsAt":"0001-01-01T00:00:00Z",' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf '"generatorURL":"http://127.0.0.1:9090/graph","fingerprint":"%s"}]}\n' "$fp"
}

# ---- section 5: watermark reaction, against docuum -----------------------------------------
# A second daemon on a 2 GiB loop filesystem. Each run starts from an empty daemon with one
# image app:latest holding GROW_MIB of its own; then GROW_MIB more arrive and cross the mark.
# docuum's --threshold and bilge's low_watermark are both set halfway through that growth.
#   pulled: app:latest arrives again as a new image that no build made (`docker import`, as a
#           pull would: no build cache holds its layer); the old one is left dangling.
#   built:  app:latest is rebuilt by BuildKit; the old one is left dangling (the usual CI
#           pattern), and BuildKit's cache still holds both images' layers.
#   cache:  a build that only makes build cache (exported to /dev/null, no image).
# Reaction time: from the growth command's exit until the filesystem's available space is back
# within half the growth of where it was before (polled every 50 ms, for at most 20 s; 0 when a
# tool already freed it while the command was still running).
GROW_MIB=${BILGE_BENCH_GROW_MIB:-200}
FAST_INTERVAL=${BILGE_BENCH_FAST_INTERVAL:-250ms}
wm_build() { # wm_build NAME [-t TAG | -o ...]: a build adding GROW_MIB of new bytes
  local name=$1
  shift
  context "$BENCH/wm-ctx/$name" "RUN head -c $((GROW_MIB * 1048576)) /dev/urandom >/blob-$name"
  dk build --network none -q "$@" "$BENCH/wm-ctx/$name" >/dev/null
}
# wm_import NAME: app:latest as a new one-layer image of GROW_MIB (the blob plus a unique file).
wm_import() {
  [ -f "$BENCH/wm/blob" ] || head -c $((GROW_MIB * 1048576)) /dev/urandom >"$BENCH/wm/blob"
  echo "$1" >"$BENCH/wm/id"
  tar -C "$BENCH/wm" -cf - blob id | dk import - app:latest >/dev/null
}
wm_reset() {
  local ids
  ids=$(dk ps -aq)
  # shellcheck disable=SC2086
  [ -z "$ids" ] || dk rm -f $ids >/dev/null
  ids=$(dk image ls -q | sort -u)
  # shellcheck disable=SC2086
  [ -z "$ids" ] || dk image rm -f $ids >/dev/null 2>&1 || true
  dk builder prune -af >/dev/null
  sync
}
# Images' total size as `docker system df` counts it (what docuum's threshold measures).
images_bytes() { api "$API/system/df" | jq '.LayersSize'; }
# wm_wait_freed T0_NS NEED_AVAIL: seconds from T0 until avail >= NEED_AVAIL; empty after 20 s.
wm_wait_freed() {
  local t0=$1 need=$2
  for _ in $(seq 400); do
    if [ "$(avail_bytes)" -ge "$need" ]; then
      calc "($(now_ns) - $t0) / 1e9"
      return 0
    fi
    sleep 0.05
  done
}
# RSS of a pid and its children, in MiB.
rss_tree_mib() {
  local pids=$1 total=0 p kb
  for p in $(pgrep -P "$1"); do pids="$pids $p"; done
  for p in $pids; do
    kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)
    total=$((total + ${kb:-0}))
  done
  awk -v k="$total" 'BEGIN { printf "%.2f", k / 1024 }'
}

section_watermark() {
  begin_section watermark
  if ! "$BILGE" clean --help >/dev/null 2>&1; then
    skip_section "bilge's watermarks do not exist in this checkout yet (branch cleanup not merged)"
    return 0
  fi
  if [ ! -x "$DOCUUM" ]; then
    skip_section "docuum is not installed at $DOCUUM"
    return 0
  fi
  local main_sock=$SOCK main_data=$DATA main_host=$DHOST
  start_daemon wm 2048
  base_image
  local grow=$((GROW_MIB * 1048576))
  mkdir -p "$BENCH/wm-bin" "$BENCH/wm"
  ln -sf "$DOCKER" "$BENCH/wm-bin/docker"
  cmds "docuum --threshold '\$THRESHOLD B'   # DOCKER_HOST=unix://\$SOCK; docker on its PATH = Debian's CLI" \
    "bilge serve --config wm.toml --docker.host unix://\$SOCK   # wm.toml: [cleanup] low_watermark = high_watermark = \"\$LOW\", until = \"0s\", cooldown = \"0s\"" \
    "docker import app.tar app:latest   # pulled: a ${GROW_MIB} MiB image no build made" \
    "docker build -t app:latest .   # built: RUN head -c ${GROW_MIB}MiB /dev/urandom >/blob" \
    "docker build -o type=tar,dest=/dev/null .   # cache: the same growth as build cache only"
  note "A second daemon on a 2 GiB ext4 loop filesystem. Each run starts from an empty daemon and one image \`app:latest\` holding ${GROW_MIB} MiB of its own; the crossing build adds ${GROW_MIB} MiB more. docuum's \`--threshold\` is the images' total (\`LayersSize\` of \`/system/df\`) plus half the growth; bilge's \`low_watermark\` (and \`high_watermark\`) is the available space minus half the growth, with \`until = \"0s\"\` and \`cooldown = \"0s\"\` so fresh objects count; bilge checks it every \`--collector.filesystem.interval\` (2 s, the default; for pulled images also $FAST_INTERVAL). Reaction: from the growth command's exit until available space is back within half the growth of where it was before (polled every 50 ms; about 0 when a tool freed it while the command was still running); 20 s without that counts as no reaction. Pulled: app:latest arrives again as a new image that no build made (\`docker import\`, standing in for a pull, which this machine cannot do), so the old one is left dangling; docuum evicts it as least recently used, bilge's standard level prunes dangling images. Built: app:latest is rebuilt by BuildKit, leaving the old one dangling; BuildKit's cache holds the layers of both images, so removing the old image alone frees nothing until the cache records go too (bilge's standard level prunes build cache, then dangling images, then the cache records they released). Cache: a build exported to /dev/null adds only build cache. Memory: VmRSS after each run; docuum keeps \`docker system events\` running as a child, so the figure with children is given too."
  local r who kind
  for kind in pulled built cache; do
    for r in $(seq "$RUNS"); do
      local order=(docuum bilge)
      [ $((r % 2)) -eq 0 ] && order=(bilge docuum)
      # Where docuum competes (an image that no build made), also bilge with a faster
      # filesystem interval: the watermark check's cadence is what its reaction waits for.
      [ "$kind" = pulled ] && order+=(bilge-fast)
      for who in "${order[@]}"; do
        say "watermark ($kind growth) run $r: $who"
        wm_reset
        base_image
        if [ "$kind" = pulled ]; then
          wm_import "v0-$kind$r$who"
        else
          wm_build "v0-$kind$r$who" -t app:latest
        fi
        sync
        local avail0 img0 pid
        avail0=$(avail_bytes)
        img0=$(images_bytes)
        if [ "$who" = docuum ]; then
          rm -rf "$BENCH/wm/docuum-home"
          mkdir -p "$BENCH/wm/docuum-home"
          bg "docuum-$kind-$r" env HOME="$BENCH/wm/docuum-home" XDG_DATA_HOME="$BENCH/wm/docuum-home" \
            PATH="$BENCH/wm-bin:$PATH" DOCKER_HOST="$DHOST" "$DOCUUM" --threshold "$((img0 + grow / 2)) B"
          pid=$BG_PID
          for _ in $(seq 300); do
            grep -q 'Listening for Docker events' "$BENCH/docuum-$kind-$r.log" && break
            sleep 0.1
          done
        else
          local cfg="$BENCH/wm/wm.toml" low port
          low=$(((avail0 - grow / 2) / 1048576))
          printf '[cleanup]\nlow_watermark = "%sMiB"\nhigh_watermark = "%sMiB"\nuntil = "0s"\ncooldown = "0s"\n' \
            "$low" "$low" >"$cfg"
          port=$(free_port)
          local interval=2s
          [ "$who" = bilge-fast ] && interval=$FAST_INTERVAL
          bg "$who-wm-$kind-$r" "$BILGE" serve --web.listen-address "127.0.0.1:$port" --docker.host "$DHOST" \
            --state.path "$BENCH/wm/$who-$kind-$r.db" --config "$cfg" --log.level info \
            --collector.filesystem.interval "$interval"
          pid=$BG_PID
          wait_http "http://127.0.0.1:$port/-/ready" 120
        fi
        sleep 1
        case $kind in
          pulled) wm_import "v1-$kind$r$who" ;;
          built) wm_build "v1-$kind$r$who" -t app:latest ;;
          cache) wm_build "v1-$kind$r$who" -o type=tar,dest=/dev/null ;;
        esac
        local t0 took
        t0=$(now_ns)
        took=$(wm_wait_freed "$t0" $((avail0 - grow / 2)))
        if [ "$who" = bilge-fast ]; then
          if [ -n "$took" ]; then emit "react_fast_s@$kind" bilge "$took"; else emit "no_reaction_fast@$kind" bilge 1; fi
        else
          if [ -n "$took" ]; then emit "react_s@$kind" "$who" "$took"; else emit "no_reaction@$kind" "$who" 1; fi
          emit rss_mib "$who" "$(rss_mib "$pid")"
          emit rss_tree_mib "$who" "$(rss_tree_mib "$pid")"
        fi
        stop "$pid"
      done
    done
  done
  rm -rf "$BENCH/wm-ctx"
  SOCK=$main_sock DATA=$main_data DHOST=$main_host
}

# ---- run ----------------------------------------------------------------------------------
say "starting a private dockerd in $BENCH/main"
start_daemon main 8192
for s in "${ALL_SECTIONS[@]}"; do
  [[ " ${SECTIONS[*]} " == *" $s "* ]] || continue
  "section_$s"
done
python3 scripts/bench_report.py "$RESULTS" "$OUTPUT"
say "wrote $OUTPUT (raw figures in $RESULTS)"
exit 0
}
