#!/usr/bin/env bash
# Checks bilge's operational bundle (alerts/, dashboards/, deploy/, docs/runbook.md) with the
# real tools: promtool, amtool, docker-compose, systemd-analyze, kubectl kustomize,
# kubernetes-validate, and scripts/bundle_lint.py for what no tool checks. Offline (no cluster);
# changes nothing outside a temp dir.
#
#   scripts/check-bundle.sh [--bilge-bin PATH]
#
# --bilge-bin (or $BILGE_BIN): the built bilge binary. `systemd-analyze verify` insists that
# ExecStart's binary exists; with it the unit is verified against that binary, without it (and
# without /usr/local/bin/bilge) against a stub — the output says which.
#
# Needs (Debian 12): prometheus (promtool), prometheus-alertmanager (amtool), docker-compose,
# systemd (systemd-analyze), kubernetes-client (kubectl, for `kubectl kustomize`; 1.20's
# kustomize v2.0.3 and today's both render the layout), python3, python3-yaml; from PyPI:
# kubernetes-validate.
# A missing tool is an error, never a skipped check.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bilge_bin=${BILGE_BIN:-}
while [ $# -gt 0 ]; do
    case $1 in
        --bilge-bin) bilge_bin=${2:?--bilge-bin needs a path}; shift 2 ;;
        --bilge-bin=*) bilge_bin=${1#*=}; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

# --- tools -----------------------------------------------------------------------------------
missing=()
need() { # need TOOL HOW-TO-INSTALL
    command -v "$1" >/dev/null 2>&1 || missing+=("$1 not found: install it ($2)")
}
need promtool "apt-get install prometheus"
need amtool "apt-get install prometheus-alertmanager"
need docker-compose "apt-get install docker-compose"
need systemd-analyze "apt-get install systemd"
need python3 "apt-get install python3"
need kubectl "apt-get install kubernetes-client"
need kubernetes-validate "pip install kubernetes-validate"
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import yaml' 2>/dev/null; then
    missing+=("PyYAML not importable by $(command -v python3): install it (apt-get install python3-yaml, or pip install pyyaml)")
fi
if [ ${#missing[@]} -gt 0 ]; then
    for m in "${missing[@]}"; do echo "FAIL  $m" >&2; done
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

failures=0
# check NAME COMMAND...: one line per check; on failure the tool's output, indented.
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        echo "ok    $name"
    else
        echo "FAIL  $name"
        printf '%s\n' "$out" | sed 's/^/        /'
        failures=$((failures + 1))
    fi
}

# --- Prometheus rules ------------------------------------------------------------------------
check "promtool check rules alerts/*.rules.yml" promtool check rules alerts/*.rules.yml
check "promtool test rules alerts/tests/*.yml" promtool test rules alerts/tests/*.yml
check "promtool check config deploy/prometheus.yml" promtool check config deploy/prometheus.yml

# --- Alertmanager ----------------------------------------------------------------------------
# amtool check-config does not open credentials_file, so /etc/bilge/webhook-token need not exist.
check "amtool check-config alerts/alertmanager.yml" amtool check-config alerts/alertmanager.yml
route() { # route EXPECTED-RECEIVERS LABEL=VALUE...
    local want=$1
    shift
    amtool config routes test --config.file=alerts/alertmanager.yml --verify.receivers="$want" "$@"
}
check "alertmanager routes a bilge_action warning to bilge only" \
    route bilge alertname=BilgeDockerDataRootAlmostFull severity=warning bilge_action=standard instance=h:9830
check "alertmanager routes a bilge_action critical to bilge and a human" \
    route bilge,human alertname=BilgeDockerDataRootFull severity=critical bilge_action=aggressive instance=h:9830
check "alertmanager routes alerts without bilge_action to a human only" \
    route human alertname=BilgeCleanupIneffective severity=critical instance=h:9830

# --- dashboard, rules metadata, runbook anchors, PrometheusRule drift, CRDs ------------------
lint() {
    python3 scripts/bundle_lint.py
}
if out=$(lint 2>&1); then
    printf '%s\n' "$out"
else
    printf '%s\n' "$out"
    echo "FAIL  scripts/bundle_lint.py"
    failures=$((failures + 1))
fi
dashboard_promql() {
    python3 scripts/bundle_lint.py --promql-rules "$tmp/dashboard-queries.yml" \
        && promtool check rules "$tmp/dashboard-queries.yml"
}
check "dashboard queries parse as PromQL (promtool check rules on them)" dashboard_promql

# --- compose ---------------------------------------------------------------------------------
compose() {
    printf 'check-bundle-token\n' > "$tmp/webhook-token"
    BILGE_WEBHOOK_TOKEN_FILE="$tmp/webhook-token" DOCKER_GID=999 \
        docker-compose -f deploy/compose.yaml config -q
}
check "docker-compose -f deploy/compose.yaml config -q (token: a temp file)" compose

# --- systemd ---------------------------------------------------------------------------------
mkdir -p "$tmp/systemd" "$tmp/bin"
unit_bin=/usr/local/bin/bilge
if [ -n "$bilge_bin" ]; then
    [ -x "$bilge_bin" ] || { echo "FAIL  --bilge-bin $bilge_bin is not an executable file"; exit 1; }
    unit_bin=$(cd "$(dirname "$bilge_bin")" && pwd)/$(basename "$bilge_bin")
    unit_note="ExecStart: $unit_bin"
elif [ -x /usr/local/bin/bilge ]; then
    unit_note="ExecStart: /usr/local/bin/bilge"
else
    printf '#!/bin/sh\nexit 0\n' > "$tmp/bin/bilge"
    chmod 0755 "$tmp/bin/bilge"
    unit_bin=$tmp/bin/bilge
    unit_note="ExecStart: a stub, no bilge binary given; pass --bilge-bin to use the real one"
fi
sed "s#/usr/local/bin/bilge#$unit_bin#g" deploy/bilge.service > "$tmp/systemd/bilge.service"
check "systemd-analyze verify deploy/bilge.service ($unit_note)" \
    systemd-analyze verify "$tmp/systemd/bilge.service"
check "systemd-analyze security deploy/bilge.service: exposure at most 2.5" \
    systemd-analyze security --offline=yes --threshold=25 "$tmp/systemd/bilge.service"
# The weekly cleanup for those who schedule with systemd: the timer and the service it starts,
# verified together (the timer's unit must exist), and the timer's calendar expression parsed.
sed "s#/usr/local/bin/bilge#$unit_bin#g" deploy/bilge-clean.service > "$tmp/systemd/bilge-clean.service"
cp deploy/bilge-clean.timer "$tmp/systemd/bilge-clean.timer"
check "systemd-analyze verify deploy/bilge-clean.timer and deploy/bilge-clean.service ($unit_note)" \
    systemd-analyze verify "$tmp/systemd/bilge-clean.timer" "$tmp/systemd/bilge-clean.service"
check "systemd-analyze security deploy/bilge-clean.service: exposure at most 2.5" \
    systemd-analyze security --offline=yes --threshold=25 "$tmp/systemd/bilge-clean.service"
calendar() {
    local expr
    expr=$(sed -n 's/^OnCalendar=//p' deploy/bilge-clean.timer)
    [ -n "$expr" ] || { echo "deploy/bilge-clean.timer has no OnCalendar="; return 1; }
    systemd-analyze calendar --iterations=2 "$expr" | tee "$tmp/calendar.txt"
    grep -q 'Next elapse: Sun ' "$tmp/calendar.txt" && grep -q ' 03:00:00' "$tmp/calendar.txt"
}
check "systemd-analyze calendar: deploy/bilge-clean.timer elapses on Sundays at 03:00" calendar

# --- Kubernetes ------------------------------------------------------------------------------
# What `kubectl apply -k` would send, rendered without a cluster, then checked: every core object
# against the Kubernetes schema, and the whole (CRDs included) by bundle_lint.py --rendered.
kubectl_version=$(kubectl version --client 2>/dev/null | grep -o 'v[0-9][0-9.]*[^ ",]*' | head -1)
render() { # render KUSTOMIZATION-DIR OUT (newer kustomize's deprecation notes go to stderr)
    kubectl kustomize "$1" > "$2"
}
# kubernetes-validate only warns about an object it has no schema for, and exits 0: so a
# DaemonSet with a mistyped apiVersion would pass unchecked. Here the only objects allowed
# without a schema are the two Prometheus Operator CRDs (bundle_lint.py checks those), and every
# other object of the file must be reported as passed.
validate() { # validate RENDERED-FILE
    local out objects crds passed
    out=$(kubernetes-validate --strict "$1" 2>&1) || { printf '%s\n' "$out"; return 1; }
    printf '%s\n' "$out"
    if printf '%s\n' "$out" \
        | grep -v -e ' passed for resource ' \
            -e "Couldn't find schema for kind \(ServiceMonitor\|PrometheusRule\) with api version monitoring\.coreos\.com/v1 " \
        | grep -q .; then
        echo "unexpected kubernetes-validate output (above): an object it could not check, or a failure"
        return 1
    fi
    objects=$(grep -c '^kind: ' "$1" || true)
    [ "$objects" -gt 0 ] || { echo "$1 holds no object: did the render fail?"; return 1; }
    crds=$(grep -c '^apiVersion: monitoring\.coreos\.com/' "$1" || true)
    passed=$(printf '%s\n' "$out" | grep -c ' passed for resource ' || true)
    if [ "$passed" -ne $((objects - crds)) ]; then
        echo "$passed object(s) passed, expected $((objects - crds)) ($objects in the file, $crds CRDs)"
        return 1
    fi
}
k8s_base=deploy/kubernetes/base
k8s_overlay=deploy/kubernetes/overlays/kube-prometheus-stack
check "kubectl kustomize $k8s_base (kubectl $kubectl_version)" render "$k8s_base" "$tmp/k8s-base.yaml"
check "kubectl kustomize $k8s_overlay (kubectl $kubectl_version)" render "$k8s_overlay" "$tmp/k8s-overlay.yaml"
check "kubernetes-validate --strict on every core object of $k8s_base, rendered" \
    validate "$tmp/k8s-base.yaml"
check "kubernetes-validate --strict on every core object of $k8s_overlay, rendered" \
    validate "$tmp/k8s-overlay.yaml"
check "kubernetes-validate --strict on deploy/kubernetes/extras/bilge-clean-cronjob.yaml" \
    validate deploy/kubernetes/extras/bilge-clean-cronjob.yaml
rendered() {
    python3 scripts/bundle_lint.py --rendered "$tmp/k8s-base.yaml" "$tmp/k8s-overlay.yaml"
}
if out=$(rendered 2>&1); then
    printf '%s\n' "$out"
else
    printf '%s\n' "$out"
    echo "FAIL  scripts/bundle_lint.py --rendered (the two renders above)"
    failures=$((failures + 1))
fi

# ---------------------------------------------------------------------------------------------
if [ "$failures" -gt 0 ]; then
    echo "FAIL  $failures check(s) failed"
    exit 1
fi
echo "ok    all bundle checks passed"
