#!/usr/bin/env python3
"""Checks the shape of bilge's module graph, so that it stays one direction.

A node is a top-level module of the library (`src/X.rs` or the folder `src/X/`); an edge X -> Y
means some file of X names `crate::Y` (in a `use`, or inline as `crate::Y::...`). Checked:

  1. the graph has no cycle;
  2. `cli` names nothing from the crate (raw flags only);
  3. no module but `config` names `config` (it assembles the settings; `main.rs` is outside the
     library and may);
  4. the leaves (`model`, `sync`, `http_error`, `host`) name nothing from the crate.

Prints the modules in dependency order (leaves first) and exits 1 with the offending edges when a
check fails. Needs only Python 3.

    scripts/check_imports.py [SRC_DIR]     # default: this repository's src/
"""

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
LEAVES = {"cli", "model", "sync", "http_error", "host"}
ROOTS = {"lib", "main"}  # the crate root and the binary: above every module

CRATE_PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
USE_GROUP = re.compile(r"\buse\s+crate::\{([^;]*)\}", re.S)


def strip_comments(text):
    """Drops // comments (doc comments mention paths that are not imports)."""
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def node_of(path):
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def edges():
    out = {}
    for f in sorted(SRC.rglob("*.rs")):
        src = node_of(f)
        text = strip_comments(f.read_text(encoding="utf-8"))
        names = set(CRATE_PATH.findall(text))
        for group in USE_GROUP.findall(text):
            names |= {n.strip().split("::")[0] for n in group.split(",") if n.strip()}
        for dst in names:
            # `crate::Error` and `crate::Result` are re-exports of the root: they name `error`.
            dst = {"Error": "error", "Result": "error", "VERSION": "lib", "REVISION": "lib", "RUST_VERSION": "lib"}.get(dst, dst)
            if dst != src:
                out.setdefault(src, {}).setdefault(dst, set()).add(str(f.relative_to(SRC.parent)))
    return out


def main():
    global SRC
    if len(sys.argv) > 1:
        SRC = Path(sys.argv[1]).resolve()
    graph = edges()
    problems = []
    for src, dsts in graph.items():
        if src in ROOTS:
            continue
        for dst, files in dsts.items():
            where = ", ".join(sorted(files))
            if src in LEAVES:
                problems.append(f"{src} is a leaf but names crate::{dst} ({where})")
            if dst == "config" and src != "config":
                problems.append(f"{src} names crate::config ({where}); config assembles settings, nothing below it imports it")
            if dst in ROOTS:
                problems.append(f"{src} names the crate root's {dst} ({where})")
    # Cycles, by depth-first search over the modules (roots excluded: they sit above everything).
    nodes = sorted({n for n in graph} | {d for ds in graph.values() for d in ds} - ROOTS)
    nodes = [n for n in nodes if n not in ROOTS]
    state, order, stack = {}, [], []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for d in sorted(graph.get(n, {})):
            if d in ROOTS:
                continue
            if state.get(d) == "open":
                cycle = stack[stack.index(d):] + [d]
                problems.append("cycle: " + " -> ".join(cycle))
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = "done"
        order.append(n)

    for n in nodes:
        if n not in state:
            visit(n)
    if problems:
        for p in problems:
            print(f"FAIL  {p}")
        return 1
    print("ok    module graph has no cycle; cli and the leaves import nothing; only config names config")
    print("      dependency order: " + " < ".join(order))
    return 0


if __name__ == "__main__":
    sys.exit(main())
