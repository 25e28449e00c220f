#!/usr/bin/env bash
# GitLab Runner's pre_build_script: name this file in the runner's config.toml
#   pre_build_script = "/usr/local/lib/bilge/ci/gitlab-pre-build.sh"
# and the runner runs it in the job's shell after fetching the sources and before the job's
# script, with the job's variables (CI_JOB_ID, CI_PROJECT_PATH, CI_RUNNER_DESCRIPTION, ...). A
# non-zero exit fails the job before its script runs. Meant for the shell executor, where the
# job's shell is on the Docker host (docs/ci.md says why). What it checks and cleans, and its
# settings: bilge-preflight.sh next to this file, and docs/ci.md.
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$dir/bilge-preflight.sh" plain \
    "job ${CI_JOB_ID:-?} (${CI_JOB_NAME:-?}) of ${CI_PROJECT_PATH:-?} on runner ${CI_RUNNER_DESCRIPTION:-$(hostname)}: checking Docker's free space"
