#!/usr/bin/env bash
# The job-started hook of GitHub's self-hosted runner: point ACTIONS_RUNNER_HOOK_JOB_STARTED at
# this file (absolute path, in the runner's .env file) and the runner runs it, as the runner's
# user, before every job, with the job's default variables (GITHUB_REPOSITORY, GITHUB_JOB,
# GITHUB_WORKSPACE, RUNNER_NAME, ...). Its output is the "Set up runner" step of the job's log;
# exit 0 lets the job run, any other code fails the job without running it (no
# continue-on-error for hooks). What it checks and cleans, and its settings: bilge-preflight.sh
# next to this file, and docs/ci.md.
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$dir/bilge-preflight.sh" github \
    "job ${GITHUB_JOB:-?} of ${GITHUB_REPOSITORY:-?} (run ${GITHUB_RUN_ID:-?}) on runner ${RUNNER_NAME:-$(hostname)}: checking Docker's free space"
