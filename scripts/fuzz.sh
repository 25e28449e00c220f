#!/usr/bin/env bash
# Runs bilge's coverage-guided fuzz targets (fuzz/, cargo-fuzz + libFuzzer), one after the other.
#
#   scripts/fuzz.sh                      every target for FUZZ_SECONDS each (default 600: on demand)
#   FUZZ_SECONDS=15 scripts/fuzz.sh      the short pass scripts/test.sh runs
#   scripts/fuzz.sh webhook classifier   only these targets
#
# Each target starts from its seeds (fuzz/seeds/TARGET, committed) and its corpus from earlier runs
# (fuzz/corpus/TARGET, not committed), and runs one libFuzzer process (one core). Any crash,
# timeout (FUZZ_TIMEOUT seconds for one input, default 10) or out-of-memory (FUZZ_RSS_MB, default
# 2048) fails the script once every target has run; libFuzzer leaves the input in
# fuzz/artifacts/TARGET/ (replay it with `cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-…`).
#
# Per target it prints and writes to FUZZ_REPORT (default fuzz/artifacts/fuzz-report.tsv) the
# seconds, executions (libFuzzer's stat::number_of_executed_units), executions per second,
# coverage, corpus size and the outcome; each target's full log is fuzz/artifacts/TARGET.log.
#
# Needs rustup's nightly toolchain (cargo-fuzz passes -Z flags); without one it runs on stable
# with RUSTC_BOOTSTRAP=1. Installs cargo-fuzz when it is missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_EACH="${FUZZ_SECONDS:-600}"
TIMEOUT="${FUZZ_TIMEOUT:-10}"
RSS_MB="${FUZZ_RSS_MB:-2048}"
REPORT="${FUZZ_REPORT:-$PWD/artifacts/fuzz-report.tsv}"

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  echo "scripts/fuzz.sh: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1" >&2
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "scripts/fuzz.sh: installing cargo-fuzz (cargo install --locked cargo-fuzz)" >&2
  cargo install --locked cargo-fuzz
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <("${fuzz[@]}" list)
fi

# Options beyond the defaults, per target: the dictionary of the format's words (fuzz/dicts), and
# longer inputs than libFuzzer's 4 KiB where the bounds under test lie beyond: the classifier's
# 8 KiB line cap, the webhook's clipping of echoed text and its cap of 64 alerts.
extra_options() {
  [ -f "dicts/$1.dict" ] && echo "-dict=dicts/$1.dict"
  case "$1" in
    classifier) echo "-max_len=32768" ;;
    webhook) echo "-max_len=16384" ;;
    *) ;;
  esac
}

mkdir -p artifacts "$(dirname "$REPORT")"
: >artifacts/build.log
echo "scripts/fuzz.sh: building ${#targets[@]} targets (log: fuzz/artifacts/build.log)"
for t in "${targets[@]}"; do
  if ! "${fuzz[@]}" build "$t" >>artifacts/build.log 2>&1; then
    tail -n 30 artifacts/build.log >&2
    exit 1
  fi
done

printf 'target\tseconds\texecutions\texec_per_s\tcoverage\tcorpus\toutcome\n' >"$REPORT"
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="artifacts/$t.log"
  start=$(date +%s)
  set +e
  # shellcheck disable=SC2046
  "${fuzz[@]}" run "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" \
    -print_final_stats=1 $(extra_options "$t") >"$log" 2>&1
  rc=$?
  set -e
  took=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  # The last status line: `#N DONE cov: C ft: F corp: U/S ...` (or the last pulse before a crash).
  status=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$status")
  corp=$(sed -nE 's/.* corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$status")
  if [ -z "$execs" ]; then
    execs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$status")
  fi
  if [ "$rc" = 0 ]; then
    outcome=ok
  else
    artifact=$(sed -nE 's/.*Test unit written to (.*)$/\1/p' "$log" | tail -n 1)
    artifact=${artifact#"$PWD/"}
    outcome="FAILED (exit $rc${artifact:+, input in fuzz/$artifact})"
    failed+=("$t")
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$took" "${execs:-?}" "${rate:-?}" "${cov:-?}" \
    "${corp:-?}" "$outcome" >>"$REPORT"
  printf '%-14s %5ss %12s runs %8s/s  cov %-6s corpus %-12s %s\n' "$t" "$took" "${execs:-?}" \
    "${rate:-?}" "${cov:-?}" "${corp:-?}" "$outcome"
  if [ "$rc" != 0 ]; then
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -n 5 | sed 's/^/    /'
  fi
done

echo "scripts/fuzz.sh: report in $REPORT"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "scripts/fuzz.sh: FAILED: ${failed[*]} (logs in fuzz/artifacts/)" >&2
  exit 1
fi
