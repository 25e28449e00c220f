#!/usr/bin/env python3
"""Static checks for bilge's operational bundle: dashboard, rules, runbook, Kubernetes manifests.

Needs Python 3.9+ and PyYAML (Debian: python3-yaml; pip: pyyaml). No network, no Prometheus.

Modes (default: run every static check, one line per check, exit 1 if any fails):

  --list-metrics          print every metric name the dashboard and the rules read, one per line
  --metrics FILE          fail, listing them, if any of those names is missing from FILE
                          (the /metrics text of a real bilge)
  --fresh                 with --metrics: FILE comes from a bilge that has recorded nothing yet;
                          every name must still be sampled, counters at 0 included, except the
                          build families (their `project` label exists only once a build is)
  --dashboard-queries     print every dashboard panel query as one JSON object a line,
                          {"panel": id, "title": ..., "expr": ...}, with Grafana's variables
                          replaced ($instance -> .*, $__rate_interval -> 5m, $__interval -> 1m,
                          $__range -> 1h), ready to evaluate in a real Prometheus
  --promql-rules FILE     write every dashboard query (panels and annotations, variables
                          replaced) as recording rules to FILE, so `promtool check rules FILE`
                          checks their syntax
  --sync-prometheusrule   rewrite deploy/kubernetes/base/prometheusrule.yaml from alerts/bilge.rules.yml
  --rendered BASE OVERLAY check `kubectl kustomize` output: BASE rendered from deploy/kubernetes/base,
                          OVERLAY from deploy/kubernetes/overlays/kube-prometheus-stack
                          (scripts/check-bundle.sh renders both); the wiring, the DaemonSet's host
                          view, state, tolerations and groups, the Service's traffic policy, and
                          that the overlay only adds the `release` label to the ServiceMonitor and
                          the PrometheusRule
"""

import argparse
import json
import re
import signal
import sys
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the host
    sys.exit("bundle_lint.py needs PyYAML: apt-get install python3-yaml, or pip install pyyaml")

ROOT = Path(__file__).resolve().parent.parent
RULES = "alerts/bilge.rules.yml"
RULE_TESTS = "alerts/tests"
DASHBOARD = "dashboards/bilge.json"
RUNBOOK = "docs/runbook.md"
RUNBOOK_URL = "https://github.com/bilge-dev/bilge/blob/main/docs/runbook.md#"
K8S = "deploy/kubernetes/base"
K8S_OVERLAY = "deploy/kubernetes/overlays/kube-prometheus-stack"
# The label kube-prometheus-stack's Prometheus selects ServiceMonitors and PrometheusRules by.
RELEASE_LABEL = "release"

# Grafana's variables and the values used when a query runs outside Grafana.
SUBSTITUTIONS = [
    ("${instance}", ".*"),
    ("$instance", ".*"),
    ("${job}", ".*"),
    ("$job", ".*"),
    ("${node}", ".*"),
    ("$node", ".*"),
    ("${__rate_interval}", "5m"),
    ("$__rate_interval", "5m"),
    ("${__interval}", "1m"),
    ("$__interval", "1m"),
    ("${__range}", "1h"),
    ("$__range", "1h"),
]

# Series Prometheus makes itself: never in bilge's /metrics.
SYNTHETIC = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
    "ALERTS",
    "ALERTS_FOR_STATE",
}

KEYWORDS = {"and", "or", "unless", "offset", "bool", "inf", "nan", "atan2", "start", "end"}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
# Aggregations may be followed by `by (...)` before their parenthesis: `sum by (x) (...)`.
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
CLEANUP_LEVELS = {
    "build_cache",
    "stopped_containers",
    "dangling_images",
    "unused_images",
    "unused_volumes",
    "standard",
    "aggressive",
}
SEVERITIES = {"warning", "critical", "info"}
UNIT_PANELS = {"stat", "timeseries", "bargauge", "gauge", "table", "state-timeline"}


# --- PromQL, just enough of it -------------------------------------------------------------------


class Selector:
    """One vector selector in a PromQL expression: a metric name and its label matchers."""

    def __init__(self, name, matchers):
        self.name = name
        self.matchers = matchers  # list of (label, op, value)

    def has(self, label, op, value):
        return (label, op, value) in self.matchers


def _skip_string(s, i):
    quote = s[i]
    i += 1
    while i < len(s) and s[i] != quote:
        i += 2 if s[i] == "\\" and quote != "`" else 1
    return i + 1


def _matching(s, i, open_, close):
    """Index just past the bracket that closes the one at s[i], skipping strings."""
    depth = 0
    while i < len(s):
        c = s[i]
        if c in "\"'`":
            i = _skip_string(s, i)
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced {open_!r} in: {s}")


def _parse_matchers(body):
    matchers = []
    for m in re.finditer(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`)\s*,?', body):
        matchers.append((m.group(1), m.group(2), m.group(3)[1:-1]))
    return matchers


def selectors(expr):
    """Every vector selector in expr. Functions, keywords, label lists and variables are skipped."""
    out = []
    s = expr
    i = 0
    while i < len(s):
        c = s[i]
        if c in "\"'`":
            i = _skip_string(s, i)
        elif c == "#":  # comment to end of line
            while i < len(s) and s[i] != "\n":
                i += 1
        elif c == "[":
            i = _matching(s, i, "[", "]")
        elif c == "{":  # selector without a metric name
            end = _matching(s, i, "{", "}")
            out.append(Selector(None, _parse_matchers(s[i + 1:end - 1])))
            i = end
        elif c == "$":  # a Grafana variable outside a string
            i += 1
            while i < len(s) and (s[i].isalnum() or s[i] in "_{}"):
                i += 1
        elif c.isdigit() or (c == "." and i + 1 < len(s) and s[i + 1].isdigit()):
            # A number or a duration (5m, 1h30m, 1e9, 0x1f): never a metric name.
            while i < len(s) and (s[i].isalnum() or s[i] in "._"):
                i += 1
        elif c.isalpha() or c in "_:":
            j = i
            while j < len(s) and (s[j].isalnum() or s[j] in "_:"):
                j += 1
            word = s[i:j]
            k = j
            while k < len(s) and s[k].isspace():
                k += 1
            nxt = s[k] if k < len(s) else ""
            if word in LABEL_LIST_KEYWORDS:
                i = _matching(s, k, "(", ")") if nxt == "(" else j
            elif word.lower() in KEYWORDS or word in AGGREGATIONS:
                i = j
            elif nxt == "(":  # function or aggregation
                i = j
            elif nxt == "{":
                end = _matching(s, k, "{", "}")
                out.append(Selector(word, _parse_matchers(s[k + 1:end - 1])))
                i = end
            else:
                out.append(Selector(word, []))
                i = j
        else:
            i += 1
    return out


def metric_names(expr):
    names = set()
    for sel in selectors(expr):
        if sel.name:
            names.add(sel.name)
        for label, op, value in sel.matchers:
            if label == "__name__" and op == "=":
                names.add(value)
    return names


def substitute(expr):
    for var, value in SUBSTITUTIONS:
        expr = expr.replace(var, value)
    return expr


# --- loading ---------------------------------------------------------------------------------


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_yaml_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_dashboard(root):
    with open(root / DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def all_panels(dashboard):
    """Every panel, including those inside collapsed rows, in order."""
    for p in dashboard.get("panels", []):
        yield p
        for child in p.get("panels", []) or []:
            yield child


def panel_targets(dashboard):
    for p in all_panels(dashboard):
        for t in p.get("targets", []) or []:
            if t.get("expr"):
                yield p, t


def annotation_queries(dashboard):
    for a in dashboard.get("annotations", {}).get("list", []):
        if a.get("expr"):
            yield a


def rules_of(root):
    doc = load_yaml(root / RULES)
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            yield group["name"], rule


def github_anchor(heading):
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def runbook_anchors(root):
    anchors = []
    for line in (root / RUNBOOK).read_text(encoding="utf-8").splitlines():
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        if m:
            anchors.append((len(m.group(1)), m.group(2).strip(), github_anchor(m.group(2))))
    return anchors


# --- checks ----------------------------------------------------------------------------------


class Report:
    def __init__(self):
        self.failed = False

    def check(self, name, problems, note=""):
        if problems:
            self.failed = True
            print(f"FAIL  {name}")
            for p in problems:
                print(f"        - {p}")
        else:
            print(f"ok    {name}{(' (' + note + ')') if note else ''}")


def _overlaps(a, b):
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def _grid_problems(panels, where):
    problems = []
    for p in panels:
        g = p.get("gridPos")
        if not g or any(k not in g for k in "xywh"):
            problems.append(f"{where}: panel {p.get('id')} {p.get('title')!r} has no complete gridPos")
            continue
        if g["x"] < 0 or g["w"] <= 0 or g["h"] <= 0 or g["x"] + g["w"] > 24:
            problems.append(f"{where}: panel {p.get('id')} {p.get('title')!r} is outside the 24-column grid: {g}")
    placed = [p for p in panels if p.get("gridPos") and all(k in p["gridPos"] for k in "xywh")]
    for n, a in enumerate(placed):
        for b in placed[n + 1:]:
            if _overlaps(a["gridPos"], b["gridPos"]):
                problems.append(f"{where}: panels {a.get('id')} {a.get('title')!r} and "
                                f"{b.get('id')} {b.get('title')!r} overlap")
    return problems


def _instance_filter_problems(expr, where):
    problems = []
    sels = selectors(expr)
    if not sels:
        problems.append(f"{where}: no series selector in {expr!r}")
    for sel in sels:
        for label in ("job", "instance"):
            if not sel.has(label, "=~", f"${label}"):
                problems.append(f'{where}: selector {sel.name or "{...}"} does not filter {label}=~"${label}"')
    return problems


def check_dashboard(root, report):
    try:
        d = load_dashboard(root)
    except (OSError, ValueError) as e:
        report.check("dashboard parses", [str(e)])
        return
    report.check("dashboard parses", [])

    problems = []
    if d.get("uid") != "bilge":
        problems.append(f"uid is {d.get('uid')!r}, expected 'bilge'")
    if not isinstance(d.get("schemaVersion"), int) or not 36 <= d["schemaVersion"] <= 41:
        problems.append(f"schemaVersion {d.get('schemaVersion')!r} is not a current one (36..41)")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no variable 'datasource' of type datasource with query prometheus")
    # job, then node (the DaemonSet's relabelled node name; empty elsewhere), then instance, each
    # narrowed by the ones before it.
    wanted = {
        "job": "label_values(bilge_exporter_build_info,job)",
        "node": 'label_values(bilge_exporter_build_info{job=~"$job"},node)',
        "instance": 'label_values(bilge_exporter_build_info{job=~"$job",node=~"$node"},instance)',
    }
    names = [v.get("name") for v in d.get("templating", {}).get("list", [])]
    if [n for n in names if n in wanted] != list(wanted):
        problems.append(f"variables {names}: expected job, node, instance in that order")
    for name, query in wanted.items():
        var = variables.get(name)
        q = var.get("query") if var else None
        if isinstance(q, dict):
            q = q.get("query")
        if not var or var.get("type") != "query" or (q or "").replace(" ", "") != query:
            problems.append(f"no variable {name!r} = {query}")
        elif (var.get("datasource") or {}).get("uid") != "${datasource}":
            problems.append(f"variable {name!r} does not use ${{datasource}}")
        elif var.get("allValue") != ".*" or not var.get("includeAll"):
            problems.append(f"variable {name!r} has no All value .* (a host without the label must still match)")
    report.check("dashboard uid, schemaVersion and variables", problems)

    ids = [p.get("id") for p in all_panels(d)]
    dupes = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    missing = [p.get("title") for p in all_panels(d) if not isinstance(p.get("id"), int)]
    report.check("dashboard panel ids are unique",
                 [f"duplicate id {i}" for i in dupes] + [f"panel {t!r} has no integer id" for t in missing],
                 note=f"{len(ids)} panels")

    problems = _grid_problems(d.get("panels", []), "top level")
    for p in d.get("panels", []):
        if p.get("type") != "row":
            continue
        if p.get("collapsed"):
            problems += _grid_problems(p.get("panels", []), f"collapsed row {p.get('title')!r}")
            if not p.get("panels"):
                problems.append(f"collapsed row {p.get('title')!r} holds no panels")
        elif p.get("panels"):
            problems.append(f"expanded row {p.get('title')!r} must not hold panels itself")
    report.check("dashboard gridPos do not overlap (top level and inside collapsed rows)", problems)

    problems = []
    for p in all_panels(d):
        if p.get("type") == "row":
            continue
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            problems.append(f"{where}: datasource is not ${{datasource}}")
        if not p.get("targets"):
            problems.append(f"{where}: no targets")
        for t in p.get("targets", []):
            if "datasource" in t and (t["datasource"] or {}).get("uid") != "${datasource}":
                problems.append(f"{where} target {t.get('refId')}: datasource is not ${{datasource}}")
    for a in annotation_queries(d):
        if (a.get("datasource") or {}).get("uid") != "${datasource}":
            problems.append(f"annotation {a.get('name')!r}: datasource is not ${{datasource}}")
    report.check("dashboard panels and annotations use ${datasource}", problems)

    problems = []
    n = 0
    for p, t in panel_targets(d):
        n += 1
        problems += _instance_filter_problems(t["expr"], f"panel {p.get('id')} {p.get('title')!r} target {t.get('refId')}")
    for a in annotation_queries(d):
        n += 1
        problems += _instance_filter_problems(a["expr"], f"annotation {a.get('name')!r}")
    report.check('dashboard queries filter every selector on job=~"$job" and instance=~"$instance"', problems,
                 note=f"{n} queries")

    # A counter's first sample is invisible to rate() and increase(): a build counter that is
    # born at 1 must be counted as the rules count it, `(x unless x offset R) or increase(x[R])`.
    problems = []
    for p, t in panel_targets(d):
        e = t["expr"]
        if re.search(r"(rate|increase)\(bilge_builds_total", e) and "unless bilge_builds_total" not in e:
            problems.append(f"panel {p.get('id')} {p.get('title')!r}: {e} misses each series' first build")
    report.check("dashboard build counts include each series' first build", problems)

    problems = []
    for p in all_panels(d):
        if p.get("type") in UNIT_PANELS:
            unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
            if not unit:
                problems.append(f"panel {p.get('id')} {p.get('title')!r} ({p['type']}) has no unit")
    report.check("dashboard stat/timeseries/bargauge/table panels have units", problems)


def check_rules(root, report):
    try:
        rules = list(rules_of(root))
    except (OSError, yaml.YAMLError) as e:
        report.check("rules parse", [str(e)])
        return
    alerts = [r for _, r in rules if "alert" in r]
    records = [r for _, r in rules if "record" in r]

    problems = []
    names = [a["alert"] for a in alerts]
    problems += [f"alert {n} is defined twice" for n in sorted({n for n in names if names.count(n) > 1})]
    anchors = {a for _, _, a in runbook_anchors(root)}
    for a in alerts:
        name = a["alert"]
        labels = a.get("labels") or {}
        ann = a.get("annotations") or {}
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity {labels.get('severity')!r} not one of {sorted(SEVERITIES)}")
        for key in ("summary", "description", "runbook_url"):
            if not str(ann.get(key, "")).strip():
                problems.append(f"{name}: annotation {key} missing")
        url = str(ann.get("runbook_url", ""))
        if url and not url.startswith(RUNBOOK_URL):
            problems.append(f"{name}: runbook_url does not start with {RUNBOOK_URL}")
        anchor = url.split("#", 1)[1] if "#" in url else ""
        if url and anchor != name.lower():
            problems.append(f"{name}: runbook anchor {anchor!r} should be {name.lower()!r} (one per alert)")
        if anchor and anchor not in anchors:
            problems.append(f"{name}: anchor #{anchor} not found in {RUNBOOK}")
        if "for" not in a:
            problems.append(f"{name}: no for: duration")
        action = labels.get("bilge_action")
        if action is not None:
            if action not in CLEANUP_LEVELS:
                problems.append(f"{name}: bilge_action {action!r} is not a cleanup level")
            # The webhook acts on the alert's instance label: aggregations must keep it, unless
            # the expression takes it from the host's own bilge (bilge_host_info) in a join.
            joined = re.search(r"group_left\s*\(\s*instance\s*\)\s*topk\s+by\s*\(\s*job\s*,\s*host\s*\)\s*\(\s*1\s*,\s*bilge_host_info\s*\)", a["expr"])
            for m in [] if joined else re.finditer(r"\b(by|without)\s*\(([^)]*)\)", a["expr"]):
                labels_in = {x.strip() for x in m.group(2).split(",")}
                if (m.group(1) == "by") != ("instance" in labels_in):
                    problems.append(f"{name}: carries bilge_action but '{m.group(0)}' drops instance")
            if re.search(r"\b(absent|absent_over_time|vector|scalar)\s*\(", a["expr"]):
                problems.append(f"{name}: carries bilge_action but its expression cannot keep instance")
    report.check("alerts have severity, summary, description, runbook_url with a runbook anchor",
                 problems, note=f"{len(alerts)} alerts, {len(records)} recording rules")

    # Runbook sections without an alert are stale.
    alert_anchors = {n.lower() for n in names}
    stale = [f"runbook section {h!r} matches no alert" for level, h, a in runbook_anchors(root)
             if level == 2 and h.startswith("Bilge") and a not in alert_anchors]
    report.check("runbook has no section for a removed alert", stale)

    # `for:` must be rewritable by `sed -E 's/for: .*/for: 1s/'` without touching anything else.
    problems = []
    for n, line in enumerate((root / RULES).read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        if re.search(r"for: ", line) and not re.fullmatch(r"\s+for: \d+[smhdwy]", line):
            problems.append(f"{RULES}:{n}: {line.strip()!r} is not a plain 'for: <duration>' line")
    report.check("every for: is a plain duration on its own line", problems)

    check_rule_tests(root, report, alerts, records)


def check_rule_tests(root, report, alerts, records):
    firing, quiet, exprs = set(), set(), []
    files = sorted((root / RULE_TESTS).glob("*.yml"))
    for f in files:
        doc = load_yaml(f) or {}
        for test in doc.get("tests", []):
            for at in test.get("alert_rule_test", []) or []:
                (firing if at.get("exp_alerts") else quiet).add(at.get("alertname"))
            for pt in test.get("promql_expr_test", []) or []:
                exprs.append(pt.get("expr", ""))
    problems = []
    for a in alerts:
        if a["alert"] not in firing:
            problems.append(f"{a['alert']}: no test shows it firing")
        if a["alert"] not in quiet:
            problems.append(f"{a['alert']}: no test shows it staying quiet")
    for r in records:
        if not any(r["record"] in metric_names(e) for e in exprs):
            problems.append(f"recording rule {r['record']}: no promql_expr_test evaluates it")
    report.check("rule tests show every alert firing and quiet, every recording rule evaluated",
                 problems, note=f"{len(files)} test files")


def _normalise(x):
    if isinstance(x, dict):
        return {k: _normalise(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_normalise(v) for v in x]
    if isinstance(x, str):
        return "\n".join(line.rstrip() for line in x.strip().splitlines())
    return x


def _first_difference(a, b, path="groups"):
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'prometheusrule.yaml' if k in b else RULES}"
            d = _first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items in {RULES}, {len(b)} in prometheusrule.yaml"
        for n, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{path}[{n}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} != {b!r}"


def _by_kind(root):
    objs = {}
    for f in sorted((root / K8S).glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        for d in load_yaml_all(f):
            objs.setdefault(d.get("kind"), []).append((f.name, d))
    return objs


def _rendered_by_kind(path):
    """The objects of one `kubectl kustomize` output, by kind, each named KIND/NAME."""
    objs = {}
    for d in load_yaml_all(path):
        name = f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
        objs.setdefault(d.get("kind"), []).append((name, d))
    return objs


def check_kubernetes(root, report, objs=None, where=K8S):
    """PrometheusRule drift and the ServiceMonitor -> Service -> DaemonSet wiring, on the base's
    files (objs None) or on a rendered kustomization (objs from _rendered_by_kind)."""
    if objs is None:
        try:
            objs = _by_kind(root)
        except (OSError, yaml.YAMLError) as e:
            report.check("kubernetes manifests parse", [str(e)])
            return

    # PrometheusRule == alerts/bilge.rules.yml
    problems = []
    prs = objs.get("PrometheusRule", [])
    if len(prs) != 1:
        problems.append(f"expected one PrometheusRule, found {len(prs)}")
    else:
        fname, pr = prs[0]
        if pr.get("apiVersion") != "monitoring.coreos.com/v1":
            problems.append(f"{fname}: apiVersion is not monitoring.coreos.com/v1")
        if not (pr.get("metadata") or {}).get("name"):
            problems.append(f"{fname}: no metadata.name")
        want = _normalise(load_yaml(root / RULES).get("groups"))
        got = _normalise((pr.get("spec") or {}).get("groups"))
        diff = _first_difference(want, got)
        if diff:
            problems.append(f"{fname} drifted from {RULES} ({diff}); "
                            "run scripts/bundle_lint.py --sync-prometheusrule")
    report.check(f"{where}: PrometheusRule groups equal alerts/bilge.rules.yml groups", problems)

    # ServiceMonitor -> Service -> DaemonSet wiring (CRDs checked here, structurally; the core
    # objects are validated against the Kubernetes schema by check-bundle.sh).
    problems = []
    sms, svcs, dss = objs.get("ServiceMonitor", []), objs.get("Service", []), objs.get("DaemonSet", [])
    if len(sms) != 1 or len(svcs) != 1 or len(dss) != 1:
        problems.append(f"expected one ServiceMonitor, Service and DaemonSet; found "
                        f"{len(sms)}, {len(svcs)}, {len(dss)}")
    else:
        (smf, sm), (svcf, svc), (dsf, ds) = sms[0], svcs[0], dss[0]
        if sm.get("apiVersion") != "monitoring.coreos.com/v1":
            problems.append(f"{smf}: apiVersion is not monitoring.coreos.com/v1")
        svc_labels = (svc.get("metadata") or {}).get("labels") or {}
        sel = ((sm.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not sel or any(svc_labels.get(k) != v for k, v in sel.items()):
            problems.append(f"{smf}: selector {sel} does not select the Service's labels {svc_labels}")
        ns = [(x.get("metadata") or {}).get("namespace") for x in (sm, svc, ds)]
        sm_ns = ((sm.get("spec") or {}).get("namespaceSelector") or {}).get("matchNames")
        if len(set(ns)) != 1 or (sm_ns is not None and ns[1] not in sm_ns):
            problems.append(f"namespaces disagree: ServiceMonitor/Service/DaemonSet in {ns}, "
                            f"namespaceSelector {sm_ns}")
        if (svc.get("metadata") or {}).get("name") != "bilge":
            problems.append(f"{svcf}: the Service must be named 'bilge': the ServiceMonitor takes "
                            "the job label from it and the rules select job=\"bilge\"")
        port_names = {p.get("name") for p in (svc.get("spec") or {}).get("ports", [])}
        for ep in (sm.get("spec") or {}).get("endpoints", []):
            if ep.get("port") not in port_names:
                problems.append(f"{smf}: endpoint port {ep.get('port')!r} is not a Service port {sorted(port_names)}")
            if ep.get("path", "/metrics") != "/metrics":
                problems.append(f"{smf}: endpoint path {ep.get('path')!r} is not /metrics")
        pod = ((ds.get("spec") or {}).get("template") or {})
        pod_labels = (pod.get("metadata") or {}).get("labels") or {}
        svc_sel = (svc.get("spec") or {}).get("selector") or {}
        if not svc_sel or any(pod_labels.get(k) != v for k, v in svc_sel.items()):
            problems.append(f"{svcf}: selector {svc_sel} does not select the DaemonSet's pods {pod_labels}")
        containers = (pod.get("spec") or {}).get("containers") or []
        cports = {p.get("name"): p.get("containerPort") for c in containers for p in c.get("ports", [])}
        for p in (svc.get("spec") or {}).get("ports", []):
            tp = p.get("targetPort")
            if tp not in cports and tp not in cports.values():
                problems.append(f"{svcf}: targetPort {tp!r} is not a container port {cports}")
        bilge = next((c for c in containers if c.get("name") == "bilge"), None)
        if not bilge:
            problems.append(f"{dsf}: no container named bilge")
        else:
            # A probe asks an endpoint over httpGet, or runs `bilge healthcheck` (which reads the
            # web config and sends a user's credentials): `--ready` asks /-/ready.
            def probed(probe):
                probe = probe or {}
                if probe.get("httpGet"):
                    return probe["httpGet"].get("path")
                cmd = (probe.get("exec") or {}).get("command") or []
                if cmd[:2] == ["bilge", "healthcheck"]:
                    return "/-/ready" if "--ready" in cmd else "/-/healthy"
                return None
            live = probed(bilge.get("livenessProbe"))
            ready = probed(bilge.get("readinessProbe"))
            if live != "/-/healthy" or ready != "/-/ready":
                problems.append(f"{dsf}: probes should be /-/healthy (liveness) and /-/ready "
                                f"(readiness), are {live!r} and {ready!r}")
            if not (bilge.get("resources") or {}).get("limits"):
                problems.append(f"{dsf}: bilge has no resource limits")
            sc = bilge.get("securityContext") or {}
            if sc.get("allowPrivilegeEscalation") is not False or sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{dsf}: bilge's securityContext must forbid privilege escalation "
                                "and use a read-only root filesystem")
    report.check(f"{where}: ServiceMonitor/Service/DaemonSet wiring and PrometheusRule structure "
                 "(CRDs checked structurally here)", problems)



def _one(objs, kind):
    """(name, object) of the only object of KIND, or None."""
    found = objs.get(kind, [])
    return found[0] if len(found) == 1 else None


def _flag(args, name):
    """The value of `--name=value` (or `--name value`) in a container's args, else None."""
    for n, a in enumerate(args):
        a = str(a)
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and n + 1 < len(args):
            return str(args[n + 1])
    return None


def check_kubernetes_node(objs, where, report):
    """What the DaemonSet needs on a real node, on rendered output: it lands on tainted nodes,
    sees the host through /host, keeps its state on the node, reaches the socket without a
    hard-coded group, and runs with no capabilities; the Service keeps a client on its node."""
    ds, svc = _one(objs, "DaemonSet"), _one(objs, "Service")
    if not ds or not svc:
        report.check(f"{where}: DaemonSet on tainted nodes, host view, state and groups",
                     [f"expected one DaemonSet and one Service, found {len(objs.get('DaemonSet', []))} "
                      f"and {len(objs.get('Service', []))}"])
        return
    (dsn, ds), (svcn, svc) = ds, svc
    pod = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = pod.get("containers") or []
    bilge = next((c for c in containers if c.get("name") == "bilge"), {})
    args = [str(a) for a in bilge.get("args") or []]
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    mounts = {m.get("mountPath"): m for m in bilge.get("volumeMounts") or []}

    def host_path_of(mount_path):
        m = mounts.get(mount_path)
        return (volumes.get(m.get("name")) or {}).get("hostPath") if m else None

    # Tainted nodes: one toleration with operator Exists and no key tolerates every taint.
    problems = []
    tols = pod.get("tolerations") or []
    if not any(t.get("operator") == "Exists" and not t.get("key") and not t.get("effect") for t in tols):
        problems.append(f"{dsn}: no toleration of every taint ({{operator: Exists}} without key "
                        f"or effect), so tainted CI nodes get no bilge; tolerations are {tols}")
    report.check(f"{where}: DaemonSet tolerates every taint", problems)

    # The host view: / read-only at /host, following the node's mounts, and --path.rootfs=/host.
    problems = []
    if _flag(args, "--path.rootfs") != "/host":
        problems.append(f"{dsn}: bilge's args have no --path.rootfs=/host: {args}")
    hp, m = host_path_of("/host"), mounts.get("/host") or {}
    if not hp or hp.get("path") != "/":
        problems.append(f"{dsn}: /host is not the node's / (hostPath path /): {hp}")
    if m.get("readOnly") is not True or m.get("mountPropagation") != "HostToContainer":
        problems.append(f"{dsn}: /host must be readOnly: true with mountPropagation: "
                        f"HostToContainer, is {m}")
    for path in mounts:
        if path != "/host" and str(path).startswith("/var/lib/docker"):
            problems.append(f"{dsn}: {path} is mounted apart: the data root is read under /host")
    sock = _flag(args, "--docker.host") or ""
    sock_path = sock[len("unix://"):] if sock.startswith("unix://") else None
    shp = host_path_of(sock_path) if sock_path else None
    if not shp or shp.get("type") != "Socket":
        problems.append(f"{dsn}: --docker.host {sock!r} is not a mounted hostPath of type Socket")
    report.check(f"{where}: DaemonSet sees the node through /host (--path.rootfs=/host, read-only, "
                 "HostToContainer) and its Docker socket", problems)

    # State on the node, not in an emptyDir: history and cooldown survive rollouts.
    problems = []
    state = _flag(args, "--state.path")
    state_dir = str(Path(state).parent) if state else None
    hp = host_path_of(state_dir) if state_dir else None
    if not state:
        problems.append(f"{dsn}: bilge's args have no --state.path")
    elif not hp or hp.get("path") != "/var/lib/bilge" or hp.get("type") != "DirectoryOrCreate":
        problems.append(f"{dsn}: --state.path {state}'s directory is not the hostPath "
                        f"/var/lib/bilge (type DirectoryOrCreate): {hp}")
    for name, v in volumes.items():
        if "emptyDir" in v:
            problems.append(f"{dsn}: volume {name} is an emptyDir: state there dies with the pod")
    report.check(f"{where}: DaemonSet keeps its state in hostPath /var/lib/bilge, no emptyDir", problems)

    # Groups and privileges: no group ID written down (nodes differ), no capabilities at all.
    problems = []
    psc = pod.get("securityContext") or {}
    for key in ("supplementalGroups", "fsGroup"):
        if key in psc:
            problems.append(f"{dsn}: the pod's securityContext sets {key} {psc[key]}: a group ID "
                            "written here is wrong on nodes whose docker group differs "
                            "(and fsGroup does not apply to hostPath)")
    for c in list(containers) + list(pod.get("initContainers") or []):
        sc = c.get("securityContext") or {}
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
            problems.append(f"{dsn}: container {c.get('name')} must drop ALL capabilities and "
                            f"add none (it runs as uid 0): {caps}")
        if sc.get("privileged") or sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{dsn}: container {c.get('name')} must be unprivileged with "
                            "allowPrivilegeEscalation: false")
    report.check(f"{where}: no hard-coded supplementalGroups or fsGroup; every container drops "
                 "ALL capabilities", problems)

    # A client's connection to the Service stays on its node.
    policy = (svc.get("spec") or {}).get("internalTrafficPolicy")
    report.check(f"{where}: Service has internalTrafficPolicy Local",
                 [] if policy == "Local" else
                 [f"{svcn}: internalTrafficPolicy is {policy!r}: a build pod's --server would "
                  "reach another node's bilge"])


def _has_key(x, key):
    """Whether KEY is a mapping key anywhere in X (labels, selectors, pod template)."""
    if isinstance(x, dict):
        return key in x or any(_has_key(v, key) for v in x.values())
    if isinstance(x, list):
        return any(_has_key(v, key) for v in x)
    return False


def _without_release(objs):
    """Every object, the `release` label taken out of the ServiceMonitor and PrometheusRule."""
    out = []
    for kind in sorted(objs, key=str):
        for name, d in objs[kind]:
            d = json.loads(json.dumps(d))
            if kind in ("ServiceMonitor", "PrometheusRule"):
                labels = (d.get("metadata") or {}).get("labels") or {}
                labels.pop(RELEASE_LABEL, None)
            out.append((name, d))
    return sorted(out, key=lambda x: x[0])


def check_kubernetes_overlay(base, overlay, report):
    """The kube-prometheus-stack overlay is the base plus the `release` label on the
    ServiceMonitor and the PrometheusRule, and nothing else."""
    problems = []
    for kind in ("ServiceMonitor", "PrometheusRule"):
        found = _one(overlay, kind)
        value = (((found or (None, {}))[1].get("metadata") or {}).get("labels") or {}).get(RELEASE_LABEL)
        if not value:
            problems.append(f"{K8S_OVERLAY}: the {kind} has no {RELEASE_LABEL} label, so "
                            "kube-prometheus-stack's Prometheus would not select it")
    for kind, items in overlay.items():
        if kind in ("ServiceMonitor", "PrometheusRule"):
            continue
        for name, d in items:
            if _has_key(d, RELEASE_LABEL):
                problems.append(f"{K8S_OVERLAY}: {name} carries the {RELEASE_LABEL} label too "
                                "(commonLabels?): only the ServiceMonitor and PrometheusRule should")
    b, o = _without_release(base), _without_release(overlay)
    if [n for n, _ in b] != [n for n, _ in o]:
        problems.append(f"{K8S_OVERLAY}: objects {[n for n, _ in o]} differ from the base's "
                        f"{[n for n, _ in b]}")
    else:
        for (name, x), (_, y) in zip(b, o):
            if x != y:
                problems.append(f"{K8S_OVERLAY}: {name} differs from the base's beyond the "
                                f"{RELEASE_LABEL} label")
    for kind, items in base.items():
        for name, d in items:
            if RELEASE_LABEL in ((d.get("metadata") or {}).get("labels") or {}):
                problems.append(f"{K8S}: {name} has a {RELEASE_LABEL} label: the base is for any "
                                "Prometheus Operator; the overlay adds it")
    report.check(f"{K8S_OVERLAY}: ServiceMonitor and PrometheusRule carry the {RELEASE_LABEL} label; "
                 "nothing else differs from the base", problems)


def rendered_checks(root, base_path, overlay_path):
    report = Report()
    try:
        base, overlay = _rendered_by_kind(base_path), _rendered_by_kind(overlay_path)
    except (OSError, yaml.YAMLError) as e:
        report.check("rendered kustomizations parse", [str(e)])
        return 1
    for where, objs in ((f"{K8S} (rendered)", base), (f"{K8S_OVERLAY} (rendered)", overlay)):
        check_kubernetes(root, report, objs, where)
        check_kubernetes_node(objs, where, report)
    check_kubernetes_overlay(base, overlay, report)
    return 1 if report.failed else 0

def check_alertmanager(root, report):
    problems = []
    path = root / "alerts/alertmanager.yml"
    text = path.read_text(encoding="utf-8")
    cfg = yaml.safe_load(text)
    receivers = {r["name"]: r for r in cfg.get("receivers", [])}
    bilge = receivers.get("bilge")
    if not bilge or len(bilge.get("webhook_configs", [])) != 1:
        problems.append("receiver 'bilge' must have exactly one webhook_config")
    else:
        wh = bilge["webhook_configs"][0]
        if not str(wh.get("url", "")).endswith(":9830/api/v1/alerts"):
            problems.append(f"bilge webhook url {wh.get('url')!r} is not bilge's /api/v1/alerts")
        if wh.get("send_resolved") is not False:
            problems.append("bilge webhook must set send_resolved: false")
        cred = ((wh.get("http_config") or {}).get("authorization") or {}).get("credentials_file")
        if not cred:
            problems.append("bilge webhook has no http_config.authorization.credentials_file")
        # The end-to-end tests rewrite these two lines with a regex.
        if len(re.findall(r"(?m)^\s+- url: \S+/api/v1/alerts$", text)) != 1:
            problems.append("the bilge webhook url must sit alone on one '- url: ...' line")
        if len(re.findall(r"(?m)^\s+credentials_file: \S+$", text)) != 1:
            problems.append("credentials_file must appear once, alone on its line")
    routes = (cfg.get("route") or {}).get("routes", [])
    if not any(r.get("receiver") == "bilge" and any("bilge_action" in m for m in r.get("matchers", []))
               for r in routes):
        problems.append("no route sends bilge_action alerts to receiver bilge")
    report.check("alertmanager.yml wiring for bilge's webhook", problems)


def check_compose(root, report):
    """The compose stack's bilge: its HEALTHCHECK (`bilge healthcheck`) reads the listen address
    and the web config from the environment, so both must be set there, not as flags only the
    server sees; every service has memory and CPU limits."""
    problems = []
    cfg = load_yaml(root / "deploy/compose.yaml")
    services = cfg.get("services", {})
    bilge = services.get("bilge", {})
    env = bilge.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    for key in ("BILGE_WEB_LISTEN_ADDRESS", "BILGE_WEB_CONFIG_FILE"):
        if key not in env:
            problems.append(f"bilge's environment has no {key}: the HEALTHCHECK would not see it")
    for arg in bilge.get("command", []):
        if str(arg).startswith(("--web.listen-address", "--web.config.file")):
            problems.append(f"bilge's command sets {arg}: set it in the environment instead")
    port = str(env.get("BILGE_WEB_LISTEN_ADDRESS", "")).rsplit(":", 1)[-1]
    if not any(str(p).endswith(f":{port}") for p in bilge.get("ports", [])):
        problems.append(f"bilge publishes no port {port!r} (its BILGE_WEB_LISTEN_ADDRESS)")
    for name, svc in services.items():
        if "mem_limit" not in svc or "cpus" not in svc:
            problems.append(f"service {name} has no mem_limit and cpus")
    # The host's view: / at /host (read-only, rslave) and --path.rootfs=/host; no separate bind of
    # the data root, whose read-only bind was reported as a read-only filesystem.
    if "--path.rootfs=/host" not in [str(a) for a in bilge.get("command", [])]:
        problems.append("bilge's command has no --path.rootfs=/host")
    host = [v for v in bilge.get("volumes", []) if isinstance(v, dict) and v.get("target") == "/host"]
    if not (host and host[0].get("source") == "/" and host[0].get("read_only") is True
            and (host[0].get("bind") or {}).get("propagation") == "rslave"):
        problems.append("bilge does not mount the host's / at /host read-only with rslave propagation")
    for v in bilge.get("volumes", []):
        target = v.get("target") if isinstance(v, dict) else str(v).split(":")[1:2]
        if target in ("/var/lib/docker", ["/var/lib/docker"]):
            problems.append(f"bilge mounts Docker's data root itself ({v}): it is found under /host")
    report.check("compose: bilge's HEALTHCHECK sees its port and web config; it sees the host through /host; every service has limits", problems)


def static_checks(root):
    report = Report()
    check_dashboard(root, report)
    check_rules(root, report)
    check_alertmanager(root, report)
    check_compose(root, report)
    check_kubernetes(root, report)
    return 1 if report.failed else 0


# --- modes -----------------------------------------------------------------------------------


def referenced_metrics(root):
    """Metric name -> where it is read. Recording rules and Prometheus' own series are left out."""
    d = load_dashboard(root)
    rules = list(rules_of(root))
    recorded = {r["record"] for _, r in rules if "record" in r}
    used = {}

    def add(expr, where):
        for name in metric_names(expr):
            if name not in recorded and name not in SYNTHETIC:
                used.setdefault(name, set()).add(where)

    for p, t in panel_targets(d):
        add(t["expr"], f"dashboard panel {p.get('id')} {p.get('title')!r}")
    for a in annotation_queries(d):
        add(a["expr"], f"dashboard annotation {a.get('name')!r}")
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.match(r"\s*label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", q or "")
        if v.get("type") == "query" and m:
            used.setdefault(m.group(1), set()).add(f"dashboard variable {v.get('name')}")
    for group, r in rules:
        add(r["expr"], f"rule {r.get('alert') or r.get('record')}")
    return used


def exposed_metrics(text):
    """Names in a Prometheus text exposition: families declared, and samples present."""
    declared, sampled, histograms = set(), set(), set()
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                declared.add(parts[2])
                if parts[1] == "TYPE" and len(parts) >= 4 and parts[3] in ("histogram", "summary"):
                    histograms.add(parts[2])
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
        if m:
            sampled.add(m.group(1))
    for h in histograms:
        declared |= {h + "_bucket", h + "_sum", h + "_count"}
    return declared, sampled


# Families labelled by what was recorded (the project or host of a build): no sample can exist
# before the first build, so a fresh bilge is allowed to lack them.
LABELLED_BY_EVENTS = {
    "bilge_builds_total",
    "bilge_builds_by_host_total",
    "bilge_build_duration_seconds_bucket",
    "bilge_build_last_timestamp_seconds",
}


def check_metrics(root, path, fresh=False):
    used = referenced_metrics(root)
    declared, sampled = exposed_metrics(Path(path).read_text(encoding="utf-8"))
    if fresh:
        # A fresh bilge must sample every other family: a counter at 0 is a sample.
        missing = sorted(n for n in used if n not in sampled and n not in LABELLED_BY_EVENTS)
        for n in sorted(LABELLED_BY_EVENTS & set(used) - sampled):
            print(f"note  {n} has no sample before the first build (its project or host label)")
    else:
        missing = sorted(n for n in used if n not in declared and n not in sampled)
    empty = sorted(n for n in used if n in declared and n not in sampled)
    for n in empty:
        print(f"note  {n} is declared in {path} but has no samples yet")
    if missing:
        print(f"FAIL  {len(missing)} metric names read by the bundle are not in {path}:")
        for n in missing:
            print(f"        - {n}  (read by {'; '.join(sorted(used[n]))})")
        return 1
    print(f"ok    all {len(used)} metric names read by the dashboard and the rules are in {path}")
    return 0


def dashboard_queries(root):
    d = load_dashboard(root)
    for p, t in panel_targets(d):
        print(json.dumps({"panel": p.get("id"), "title": p.get("title"), "expr": substitute(t["expr"])}))
    return 0


def promql_rules(root, out):
    d = load_dashboard(root)
    rules = []
    for p, t in panel_targets(d):
        rules.append({"record": f"dashboard:panel_{p.get('id')}_{t.get('refId', 'A')}",
                      "expr": substitute(t["expr"])})
    for n, a in enumerate(annotation_queries(d)):
        rules.append({"record": f"dashboard:annotation_{n}", "expr": substitute(a["expr"])})
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f, sort_keys=False)
    print(f"wrote {len(rules)} dashboard queries to {out}")
    return 0


def sync_prometheusrule(root):
    text = (root / RULES).read_text(encoding="utf-8")
    body = text[text.index("\ngroups:") + 1:]
    indented = "".join(("  " + line) if line.strip() else line for line in body.splitlines(True))
    header = (
        "# Generated from alerts/bilge.rules.yml by `scripts/bundle_lint.py --sync-prometheusrule`;\n"
        "# scripts/check-bundle.sh fails if the two drift apart. Edit the rules file, not this one.\n"
        "# For the Prometheus Operator: its ruleSelector must match the labels below (the\n"
        "# kube-prometheus-stack overlay adds its `release` label).\n"
        "apiVersion: monitoring.coreos.com/v1\n"
        "kind: PrometheusRule\n"
        "metadata:\n"
        "  name: bilge\n"
        "  namespace: monitoring\n"
        "  labels:\n"
        "    app.kubernetes.io/name: bilge\n"
        "    app.kubernetes.io/component: alerting-rules\n"
        "spec:\n"
    )
    out = root / K8S / "prometheusrule.yaml"
    out.write_text(header + indented, encoding="utf-8")
    print(f"wrote {out.relative_to(root)}")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this script's ..)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--list-metrics", action="store_true")
    mode.add_argument("--metrics", metavar="FILE")
    mode.add_argument("--dashboard-queries", action="store_true")
    mode.add_argument("--promql-rules", metavar="FILE")
    mode.add_argument("--sync-prometheusrule", action="store_true")
    mode.add_argument("--rendered", nargs=2, metavar=("BASE", "OVERLAY"))
    ap.add_argument("--fresh", action="store_true", help="with --metrics: from a bilge that recorded nothing yet")
    args = ap.parse_args(argv)
    # Printing into `| head` is fine: die quietly on a closed pipe.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    root = args.root.resolve()
    if args.list_metrics:
        for name in sorted(referenced_metrics(root)):
            print(name)
        return 0
    if args.metrics:
        return check_metrics(root, args.metrics, fresh=args.fresh)
    if args.dashboard_queries:
        return dashboard_queries(root)
    if args.promql_rules:
        return promql_rules(root, args.promql_rules)
    if args.sync_prometheusrule:
        return sync_prometheusrule(root)
    if args.rendered:
        return rendered_checks(root, *args.rendered)
    return static_checks(root)


if __name__ == "__main__":
    sys.exit(main())
