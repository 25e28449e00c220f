#!/usr/bin/env python3
"""Renders BENCHMARKS.md from the raw figures scripts/bench.sh keeps in target/bench.

Each section's SECTION.tsv holds one figure per line: metric, subject, value (tab-separated);
subject is the anchor's name, `bilge`, or `-` for section facts (date, skipped). SECTION.md holds
the exact commands and notes the run wrote. scripts/bench_notes.md holds hand-written analysis
(profiles of missed targets), one `## SECTION` heading per section, and is quoted under that
section. This script computes medians, ranges and ratios and judges every target on medians.

Usage: bench_report.py RESULTS_DIR OUTPUT_MD
"""

import os
import statistics
import sys
from dataclasses import dataclass


@dataclass
class Target:
    """A target, judged on medians: kind is ratio_min, ratio_max, abs_max, diff_max, pct_max,
    equal (within `value` as a fraction) or never (the anchor never reacts, bilge does)."""

    kind: str
    value: float
    text: str


@dataclass
class Row:
    label: str
    metric: str
    unit: str
    digits: int
    target: Target | None = None
    anchor: bool = True  # whether the anchor has this figure
    anchor_only: bool = False  # a figure of the anchor alone (no bilge column)
    anchor_from: tuple[str, str] | None = None  # the anchor column from (metric, subject)
    bilge_from: tuple[str, str] | None = None  # the bilge column from (metric, subject)


# Sections in the order. Rows whose metric has `@` are expanded per size found.
SECTIONS = [
    {
        "key": "scrape",
        "title": "1. Scrape",
        "anchor": "node_exporter",
        "rows": [
            Row("throughput", "req_s", "req/s", 0, Target("ratio_min", 20, "≥ 20× node_exporter")),
            Row("latency p50", "p50_ms", "ms", 3),
            Row("latency p99", "p99_ms", "ms", 3, Target("abs_max", 5, "< 5 ms")),
            Row("CPU per 1,000 scrapes", "cpu_s_per_1k", "s", 3),
            Row("resident memory after the load", "rss_mib", "MiB", 1, Target("ratio_max", 0.5, "≤ ½ node_exporter")),
            Row("… of which anonymous (heap, stacks)", "rss_anon_mib", "MiB", 1),
            Row("… of which file-backed (the mapped binary and libraries)", "rss_file_mib", "MiB", 1),
            Row("response size", "body_bytes", "bytes", 0),
            Row("series in the response", "series", "", 0),
            Row("failed requests", "errors", "", 0),
            Row("control: p99 of `/-/healthy` (a constant answer) under the same load", "control_p99_ms", "ms", 3, anchor=False),
            Row("control: throughput of `/-/healthy`", "control_req_s", "req/s", 0, anchor=False),
        ],
    },
    {
        "key": "docker",
        "title": "2. Docker collection at scale",
        "anchor": "raw",
        "anchor_label": "raw `GET /system/df`",
        "rows": [
            Row("objects in the daemon", "objects@", "", 0, anchor=False),
            Row("one collection (raw call vs `bilge_collector_duration_seconds`)", "collect_ms@", "ms", 2, Target("ratio_max", 1.1, "≤ 1.1× raw")),
            Row("raw `GET /info` (bilge asks it once per connection and every 5 min, not per collection)", "info_ms@", "ms", 2, anchor_only=True),
            Row("raw `GET /version` (likewise)", "version_ms@", "ms", 2, anchor_only=True),
            Row("`bilge df --json` as a command (vs `curl` as a command)", "df_cmd_ms@", "ms", 1),
            Row("bilge's first collection (looks up the log path of each container that has started, once)", "first_collect_s@", "s", 3, anchor=False),
            Row("scrape p99 with collections in flight, one scraper (as Prometheus)", "inflight1_p99_ms@", "ms", 3, Target("abs_max", 2, "< 2 ms"), anchor=False),
            Row("scrape p50 with collections in flight, one scraper", "inflight1_p50_ms@", "ms", 3, anchor=False),
            Row("control: p99 of `/-/healthy` with collections in flight, one scraper", "inflight1_control_p99_ms@", "ms", 3, anchor=False),
            Row("wrk's own p99 for the one scraper (not the scrapes' latency: see its check)", "inflight1_wrk_p99_ms@", "ms", 3, anchor=False),
            Row("check: wrk's samples added up, over its run (over 1: more time than the run had)", "inflight1_wrk_busy@", "", 3, anchor=False),
            Row("scrape p99 with collections in flight, saturating load (16 connections)", "inflight_p99_ms@", "ms", 3, anchor=False),
            Row("scrape p50 with collections in flight, saturating load", "inflight_p50_ms@", "ms", 3, anchor=False),
            Row("scrape throughput with collections in flight", "inflight_req_s@", "req/s", 0, anchor=False),
            Row("collection time during that load", "inflight_collect_ms@", "ms", 1, anchor=False),
            Row("control: p99 of `/-/healthy` (a constant answer) with collections in flight, saturating load", "inflight_control_p99_ms@", "ms", 3, anchor=False),
        ],
    },
    {
        "key": "build",
        "title": "3. Build wrapper overhead",
        "anchor": "plain",
        "anchor_label": "the command alone",
        "rows": [
            Row("`true`", "fixed_ms", "ms", 2, Target("diff_max", 20, "< 20 ms fixed")),
            Row("1 GiB stream through `fold`", "stream_s", "s", 2, Target("pct_max", 5, "< 5 %")),
            Row("control: the stream through `… \\| cat` (any wrapper's floor), in the bilge column", "stream_s", "s", 2, bilge_from=("stream_s", "cat")),
            Row("bilge against that control (`… \\| cat` in the anchor column)", "stream_s", "s", 2, anchor_from=("stream_s", "cat")),
            Row("stream throughput", "stream_mb_s", "MB/s", 0),
            Row("classification throughput (`cat` of the text from the page cache)", "classify_mb_s", "MB/s", 0),
        ],
    },
    {
        "key": "clean",
        "title": "4. Cleanup",
        "anchor": "docker",
        "anchor_label": "`docker … prune -f` ×3",
        "rows": [
            Row("time", "clean_s", "s", 2, Target("ratio_max", 1.05, "≤ 1.05×")),
            Row("bytes freed", "freed_mib", "MiB", 1, Target("at_least", 0.02, "the same bytes (or more)")),
            Row("webhook delivery → prune start", "webhook_start_ms", "ms", 1, anchor=False),
        ],
    },
    {
        "key": "watermark",
        "title": "5. Watermark reaction, against docuum",
        "anchor": "docuum",
        "rows": [
            Row("growth crossing the mark → space freed, pulled image", "react_s@pulled", "s", 2, Target("no_slower", 1.0, "no slower")),
            Row("… the same with bilge's `--collector.filesystem.interval 250ms`", "react_fast_s@pulled", "s", 2, Target("no_slower", 1.0, "no slower"), anchor_from=("react_s@pulled", "docuum")),
            Row("growth crossing the mark → space freed, BuildKit-built image", "react_s@built", "s", 2, Target("no_slower", 1.0, "no slower")),
            Row("growth crossing the mark → space freed, build cache only", "react_s@cache", "s", 2, Target("no_slower", 1.0, "bilge catches it")),
            Row("resident memory", "rss_mib", "MiB", 1),
            Row("resident memory with child processes", "rss_tree_mib", "MiB", 1),
        ],
    },
    {
        "key": "scale",
        "title": "6. Collection cost at scale, against a poller",
        "anchor": "raw",
        "anchor_label": "control: `/system/df?verbose=1` every 60 s",
        "rows": [
            Row("objects in the daemon", "objects@", "", 0, anchor=False),
            Row("daemon CPU of the poller (its window less the trickle's)", "poller_cpu_s@", "s", 2, Target("ratio_max", 0.25, "≤ ¼ control")),
            Row("daemon CPU over the window, trickle included", "daemon_cpu_s@", "s", 2),
            Row("control: daemon CPU of the trickle alone, in the bilge column", "daemon_cpu_s@", "s", 2, anchor=False, bilge_from=("daemon_cpu_s@", "trickle")),
            Row("bilge's own CPU over the window", "bilge_cpu_s@", "s", 2, anchor=False),
            Row("bilge's resident memory at the end", "rss_mib@", "MiB", 1, anchor=False),
            Row("full collections in the window", "collections_full@", "", 0, anchor=False),
            Row("partial collections (only what changed)", "collections_partial@", "", 0, anchor=False),
            Row("collections that asked nothing", "collections_unchanged@", "", 0, anchor=False),
            Row("… of them, collections that left a costly answer for later (`--docker.df-budget`)", "collections_deferred@", "", 0, anchor=False),
            Row("drift from docker system df after the last change, %", "drift_pct@", "%", 3, anchor=False),
            Row("… count figures that differ", "drift_counts@", "", 0, anchor=False),
            Row("drift after the next full collection, %", "drift_full_pct@", "%", 3, Target("abs_max", 1.0001, "≤ 1 %"), anchor=False),
            Row("daemon CPU of one control poll, `/system/df?verbose=1`", "call_cpu_s@", "s", 3, anchor_only=True),
            Row("daemon CPU of one tagged build's partial collection, `?type=image&type=build-cache`", "call_build_cpu_s@", "s", 3, anchor=False),
            Row("… of which `?type=image` alone", "call_image_cpu_s@", "s", 3, anchor=False),
            Row("… of which `?type=build-cache` alone", "call_cache_cpu_s@", "s", 3, anchor=False),
            Row("daemon CPU of one container change's partial collection, an inspection `?size=1`", "call_container_cpu_s@", "s", 4, anchor=False),
            Row("daemon CPU of one unchanged collection, `/_ping`", "call_ping_cpu_s@", "s", 4, anchor=False),
        ],
    },
]


# perf profiles the bench keeps (target/bench/profile-NAME.txt), quoted under their section.
PROFILES = {
    "scrape": [("scrape-bilge", "bilge under wrk"), ("scrape-node_exporter", "node_exporter under wrk")],
    "docker": [("inflight", "the whole machine while wrk scrapes bilge and bilge's collections of 2,000 objects run back to back")],
    "build": [("stream", "the 1 GiB stream through `bilge build`")],
}


def read_tsv(path):
    figures = {}
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                continue
            metric, subject, value = parts
            figures.setdefault((metric, subject), []).append(value)
    return figures


def nums(values):
    out = []
    for v in values or []:
        try:
            out.append(float(v))
        except ValueError:
            pass
    return out


def fmt(x, digits):
    if x is None:
        return "—"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def cell(values, digits, unit):
    """median [min–max] (n runs)."""
    v = nums(values)
    if not v:
        return "—"
    med = statistics.median(v)
    u = f" {unit}" if unit else ""
    if len(v) == 1:
        return f"{fmt(med, digits)}{u}"
    return f"{fmt(med, digits)}{u} [{fmt(min(v), digits)}–{fmt(max(v), digits)}] ×{len(v)}"


def judge(target, anchor, bilge):
    """(ratio text, verdict) on medians."""
    a = statistics.median(anchor) if anchor else None
    b = statistics.median(bilge) if bilge else None
    ratio = f"{b / a:.2f}×" if a and b is not None else "—"
    if target is None:
        return ratio, ""
    if target.kind == "no_slower" and a is None:
        # The anchor never freed the space: bilge meets it by freeing it at all.
        return "—", "met" if b is not None else "**missed**"
    if b is None:
        return ratio, "not measured"
    if target.kind == "abs_max":
        return ratio, "met" if b < target.value else "**missed**"
    if a is None or (a == 0 and target.kind in ("ratio_min", "ratio_max", "no_slower", "pct_max")):
        return ratio, "not measured"
    if target.kind == "ratio_min":
        ok = b / a >= target.value
    elif target.kind == "ratio_max":
        ok = b / a <= target.value
    elif target.kind == "diff_max":
        ratio = f"+{b - a:.2f} ms" if b >= a else f"{b - a:.2f} ms"
        ok = b - a < target.value
    elif target.kind == "pct_max":
        ratio = f"{(b - a) / a * 100:+.1f} %"
        ok = (b - a) / a * 100 < target.value
    elif target.kind == "at_least":
        ok = b >= a * (1 - target.value)
    elif target.kind == "no_slower":
        ok = b / a <= target.value
    else:
        raise ValueError(target.kind)
    return ratio, "met" if ok else "**missed**"


def expand(row, figures):
    """Rows with a per-size metric become one row per size found, in numeric order."""
    if "@" not in row.metric:
        return [(row.label, row.metric)]
    prefix = row.metric
    sizes = sorted(
        {m[len(prefix):] for (m, _s) in figures if m.startswith(prefix)},
        key=lambda s: (0, float(s)) if s.replace(".", "").isdigit() else (1, s),
    )
    return [(f"{row.label}, {s}" if s.replace('.', '').isdigit() else f"{row.label}", prefix + s) for s in sizes]


def read_notes(path):
    notes = {}
    if not os.path.exists(path):
        return notes
    key = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("## "):
                key = line[3:].strip()
                notes[key] = []
            elif key:
                notes[key].append(line)
    return {k: "".join(v).strip() for k, v in notes.items()}


def render(results, here):
    out = []
    headline = []
    machine = {}
    mpath = os.path.join(results, "machine.tsv")
    if os.path.exists(mpath):
        with open(mpath, encoding="utf-8") as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("\t")
                machine[k] = v
    notes = read_notes(os.path.join(here, "bench_notes.md"))

    out.append("# Benchmarks\n")
    out.append(
        "Written by `scripts/bench.sh` (run it as root: `sudo scripts/bench.sh`; one section: "
        "`sudo scripts/bench.sh scrape`). Every figure is the **median** of the runs, with "
        "[min–max] and the number of runs; ratios are bilge ÷ anchor on medians, taken in one "
        "run with the anchor and bilge measured back to back. The machine is shared and noisy "
        "(other engineers compile on its two cores), so absolute numbers matter less than the "
        "ratios.\n"
    )
    out.append("## Machine\n")
    out.append("| | |\n| --- | --- |")
    for k, label in [
        ("cpu", "CPU"),
        ("cores", "cores"),
        ("memory", "memory"),
        ("kernel", "kernel"),
        ("os", "OS"),
        ("load", "load average at start"),
        ("date", "date of the last run"),
        ("bilge", "bilge"),
        ("docker", "Docker Engine"),
        ("node_exporter", "node_exporter"),
        ("docuum", "docuum"),
        ("wrk", "wrk"),
        ("hyperfine", "hyperfine"),
    ]:
        if k in machine:
            out.append(f"| {label} | {machine[k]} |")
    out.append("")

    body = []
    for sec in SECTIONS:
        figures = read_tsv(os.path.join(results, f"{sec['key']}.tsv"))
        body.append(f"## {sec['title']}\n")
        if figures is None:
            body.append("Not run yet.\n")
            headline.append((sec["title"], "—", "not run", "", ""))
            continue
        when = figures.get(("date", "-"), ["?"])[0]
        skipped = figures.get(("skipped", "-"))
        if skipped:
            body.append(f"Not run ({when}): {skipped[0]}.\n")
            headline.append((sec["title"], "—", "not run: " + skipped[0], "", ""))
            if sec["key"] in notes:
                body.append(notes[sec["key"]] + "\n")
            continue
        anchor = sec["anchor"]
        alabel = sec.get("anchor_label", anchor)
        body.append(f"Run {when}. Anchor: {alabel}.\n")
        body.append(f"| figure | {alabel} | bilge | ratio | target | |")
        body.append("| --- | --- | --- | --- | --- | --- |")
        for row in sec["rows"]:
            for label, metric in expand(row, figures):
                # A per-size `*_from` ending in `@` takes this row's size.
                def source(frm, subject):
                    if frm is None:
                        return (metric, subject)
                    m, sub = frm
                    return (metric if m.endswith("@") else m, sub)
                a = figures.get(source(row.anchor_from, anchor), [])
                b = figures.get(source(row.bilge_from, "bilge"), [])
                if not a and not b and not any(m.startswith("no_reaction@") for (m, _s) in figures):
                    continue
                ratio, verdict = judge(row.target, nums(a), nums(b))
                if row.anchor_only:
                    ratio = ""
                if not row.anchor:
                    ratio = "" if row.target is None or row.target.kind != "never" else ratio
                tgt = row.target.text if row.target else ""
                acell = cell(a, row.digits, row.unit) if row.anchor else ""
                bcell = cell(b, row.digits, row.unit)
                if metric.startswith("react_"):
                    kind = metric.split("@", 1)[1]
                    fast = "_fast" if metric.startswith("react_fast") else ""
                    for who, values in ((anchor, a), ("bilge", b)):
                        name = f"no_reaction{fast if who == 'bilge' else ''}@{kind}"
                        missed = len(figures.get((name, who), []))
                        if missed:
                            extra = f"no reaction within 20 s ×{missed}"
                            if who == anchor:
                                acell = extra if acell == "—" else f"{acell}; {extra}"
                            else:
                                bcell = extra if bcell == "—" else f"{bcell}; {extra}"
                body.append(f"| {label} | {acell} | {bcell} | {ratio} | {tgt} | {verdict} |")
                if row.target:
                    headline.append((sec["title"], label, tgt, ratio, verdict))
        body.append("")
        mdpath = os.path.join(results, f"{sec['key']}.md")
        if os.path.exists(mdpath):
            with open(mdpath, encoding="utf-8") as f:
                text = f.read().strip()
            if text:
                body.append(text + "\n")
        if sec["key"] in notes:
            body.append(notes[sec["key"]] + "\n")
        for name, title in PROFILES.get(sec["key"], []):
            ppath = os.path.join(results, f"profile-{name}.txt")
            if os.path.exists(ppath):
                with open(ppath, encoding="utf-8") as f:
                    text = f.read().rstrip()
                if text:
                    body.append(f"Profile: {title} (`perf record -F 999`, flat, share of samples by process, object and symbol; an extra run, not counted):\n")
                    body.append("```\n" + text + "\n```\n")

    out.append("## Targets\n")
    out.append("| section | figure | target | ratio | |")
    out.append("| --- | --- | --- | --- | --- |")
    for title, label, tgt, ratio, verdict in headline:
        out.append(f"| {title} | {label} | {tgt} | {ratio} | {verdict} |")
    out.append("")
    out.extend(body)
    if "general" in notes:
        out.append("## Notes\n")
        out.append(notes["general"] + "\n")
    return "\n".join(out).rstrip() + "\n"


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    here = os.path.dirname(os.path.abspath(__file__))
    text = render(sys.argv[1], here)
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
