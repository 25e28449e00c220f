#!/usr/bin/env bash
# bilge-preflight.sh: the part that bilge's CI pre-job hooks share (github-job-started.sh,
# gitlab-pre-build.sh call it). Before a job starts, it makes sure Docker's data root has room:
#
#   bilge clean --min-free "$BILGE_CI_MIN_FREE" --yes
#
# measures the data root, runs the host's standard cleanup only when less than that is available
# (recorded in the audit of the host's state file, under the host's cleanup lock, so it never
# prunes alongside a `bilge serve`), and exits 3 when the data root is still short afterwards.
# This script turns bilge's answer into the runner's: exit 0 lets the job start, anything else
# fails it. See docs/ci.md.
#
#   bilge-preflight.sh github|plain [WHAT]
#
# github: messages are also workflow commands (::warning::, ::error::, ::group::) so that they
# show on the job's summary; plain: text only. WHAT names the job in the first line.
#
# Settings (environment; the runner's .env file or config.toml `environment`):
#   BILGE_BIN              the bilge binary (default: `bilge` on PATH, else /usr/local/bin/bilge)
#   BILGE_CI_MIN_FREE      room a job needs on the data root: `10GiB` or `15%` (default 10GiB)
#   BILGE_CI_ON_LOW_SPACE  still short after the cleanup: `fail` (default: the job does not
#                          start, exit 3) or `warn` (the job starts anyway)
#   BILGE_CI_ON_ERROR      bilge could not check or clean (not installed, Docker down, the lock
#                          held past --lock-timeout, a bad setting): `warn` (default: the job
#                          starts) or `fail` (the job fails with bilge's exit code)
# and everything bilge itself reads, as `bilge serve` on this host has it: BILGE_STATE_PATH,
# BILGE_CLEANUP_LOCK_FILE, BILGE_CONFIG, BILGE_DOCKER_HOST, BILGE_LOCK_TIMEOUT,
# BILGE_CLEAN_LEVEL, BILGE_CLEAN_UNTIL, BILGE_CLEAN_TARGET_FREE, BILGE_LOG_LEVEL (default here
# `warn`, so the job log shows bilge's lines and tables, not its logs).
#
# Exit codes: 0 the job may start; 3 the data root is still short (BILGE_CI_ON_LOW_SPACE=fail);
# bilge's own code (1, 2, 130, 143) when it failed and BILGE_CI_ON_ERROR=fail; 2 for a bad
# setting of this script.

# No `set -e`: the runner may run this with `bash -e`, so every status is caught by hand.
set -uo pipefail

style=${1:-plain}
what=${2:-}
min_free=${BILGE_CI_MIN_FREE:-10GiB}
on_low=${BILGE_CI_ON_LOW_SPACE:-fail}
on_error=${BILGE_CI_ON_ERROR:-warn}
export BILGE_LOG_LEVEL=${BILGE_LOG_LEVEL:-warn}
# The lock file and the state file's WAL may be created here: keep them usable by the group
# that `bilge serve` and the runner share (docs/ci.md, "One state file for the host").
umask 0007

# say LEVEL MESSAGE: one line on stderr (LEVEL: info, warning, error).
say() {
    local level=$1
    shift
    if [ "$style" = github ] && [ "$level" != info ]; then
        # A workflow command: an annotation on the job, and the line in its log.
        echo "::$level title=bilge pre-flight::$*"
    else
        echo "bilge pre-flight: $*" >&2
    fi
}

case $style in github | plain) ;; *)
    say error "unknown style ${style@Q} (github or plain)"
    exit 2
    ;;
esac
for setting in "BILGE_CI_ON_LOW_SPACE=$on_low" "BILGE_CI_ON_ERROR=$on_error"; do
    case ${setting#*=} in fail | warn) ;; *)
        say error "${setting%%=*} is ${setting#*=}; it takes fail or warn"
        exit 2
        ;;
    esac
done

bilge=${BILGE_BIN:-}
if [ -z "$bilge" ]; then
    bilge=$(command -v bilge 2>/dev/null || echo /usr/local/bin/bilge)
fi

[ -n "$what" ] && say info "$what"
if [ ! -x "$bilge" ] && ! command -v "$bilge" >/dev/null 2>&1; then
    rc=127
    msg="bilge was not found at $bilge: install it or set BILGE_BIN"
else
    [ "$style" = github ] && echo "::group::bilge clean --min-free $min_free"
    "$bilge" clean --min-free "$min_free" --yes
    rc=$?
    [ "$style" = github ] && echo "::endgroup::"
    msg="bilge clean --min-free $min_free exited $rc"
fi

case $rc in
0)
    exit 0
    ;;
3)
    if [ "$on_low" = fail ]; then
        say error "Docker's data root has less than $min_free available even after the cleanup; the job is not started (BILGE_CI_ON_LOW_SPACE=fail)"
        exit 3
    fi
    say warning "Docker's data root has less than $min_free available even after the cleanup; starting the job anyway (BILGE_CI_ON_LOW_SPACE=warn)"
    exit 0
    ;;
*)
    if [ "$on_error" = fail ]; then
        say error "$msg; the job is not started (BILGE_CI_ON_ERROR=fail)"
        exit "$rc"
    fi
    say warning "$msg; starting the job without the check (BILGE_CI_ON_ERROR=warn)"
    exit 0
    ;;
esac
