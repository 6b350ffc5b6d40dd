#!/usr/bin/env python3
"""Lists the dependency edges between sibling modules of each crate and fails on a cycle.

For every module file (test modules excluded), each `crate::`, `super::` and `self::` path it
names is resolved to a module; an edge A -> B is recorded between the two siblings (children of
their nearest common parent) that contain the user and the used module. A name the parent
re-exports (`pub use hub::Hub;` in fanout.rs) counts as its defining sibling. Exit status 1 when
the siblings of some parent form a cycle.

Usage: scripts/module_cycles.py [--edges] [SRC_DIR ...]   (default: every crate's src/)
"""

import os
import re
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SRCS = [
    "proto/src",
    "server/src",
    "client/src",
    "loadtest/src",
    "testenv/src",
    "examples/netpol-agent/src",
]


def module_files(src):
    """Yields (module path tuple, file) for every module file under src, without tests."""
    for dirpath, _, files in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        parts = [] if rel == "." else rel.split(os.sep)
        if "bin" in parts[:1] or "tests" in parts or "gen" in parts:
            continue
        for name in files:
            if not name.endswith(".rs") or name == "tests.rs":
                continue
            stem = name[:-3]
            if stem in ("lib", "main") and not parts:
                path = ()
            elif stem == "mod":
                path = tuple(parts)
            else:
                path = tuple(parts) + (stem,)
            yield path, os.path.join(dirpath, name)


def strip_tests(text):
    """Drops `#[cfg(test)] mod tests { ... }` blocks and comments."""
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def flatten(tree):
    """`a::{b, c::{d}}` -> ['a::b', 'a::c::d']."""
    tree = tree.strip()
    m = re.match(r"^(.*?)\{(.*)\}$", tree, re.S)
    if not m:
        return [tree]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    parts.append(cur)
    return [prefix + p for part in parts if part.strip() for p in flatten(part)]


def paths_in(text):
    paths = []
    for m in re.finditer(r"\buse\s+((?:crate|super|self)\b[^;]*);", text, re.S):
        paths += [re.sub(r"\s+as\s+\w+$", "", p).replace(" ", "") for p in flatten(m.group(1))]
    for m in re.finditer(r"(?<![\w:])((?:crate|super)(?:::\w+)+)", text):
        paths.append(m.group(1))
    return paths


def resolve(path, here, modules):
    """The module a path names, as a tuple, relative to the crate root."""
    segs = path.split("::")
    base = list(here)
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    while segs and segs[0] in ("super", "self"):
        if segs[0] == "super":
            base = base[:-1]
        segs = segs[1:]
    mod = tuple(base)
    for seg in segs:
        if mod + (seg,) in modules:
            mod = mod + (seg,)
        else:
            return mod, seg
    return mod, None


def reexports(modules):
    """(parent, name) -> child module, from `pub use child::...name` in parent files."""
    found = {}
    for path, text in modules.items():
        for m in re.finditer(r"\bpub(?:\([\w:]+\))?\s+use\s+([^;]*);", text, re.S):
            for full in flatten(m.group(1)):
                segs = full.replace("self::", "").split("::")
                if len(segs) >= 2 and path + (segs[0],) in modules:
                    name = re.sub(r".*\sas\s+", "", segs[-1]).strip()
                    found[(path, name)] = path + (segs[0],)
    return found


def crate_edges(src):
    modules = {}
    for path, file in module_files(src):
        with open(file, encoding="utf-8") as f:
            modules[path] = strip_tests(f.read())
    exported = reexports(modules)
    edges = defaultdict(set)  # parent -> {(a, b)}
    for here, text in modules.items():
        for p in paths_in(text):
            target, item = resolve(p, here, modules)
            if item and (target, item) in exported:
                target = exported[(target, item)]
            common = 0
            while common < min(len(here), len(target)) and here[common] == target[common]:
                common += 1
            if common >= len(here) or common >= len(target):
                continue  # an ancestor or a descendant, not a sibling
            parent = here[:common]
            edges[parent].add((here[common], target[common]))
    return edges


def cycles(pairs):
    graph = defaultdict(set)
    for a, b in pairs:
        graph[a].add(b)
    found, state = [], {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def main():
    args = sys.argv[1:]
    show = "--edges" in args
    srcs = [a for a in args if a != "--edges"] or [os.path.join(ROOT, s) for s in DEFAULT_SRCS]
    failed = False
    for src in srcs:
        for parent, pairs in sorted(crate_edges(src).items()):
            where = f"{os.path.relpath(src, ROOT)}::{'::'.join(parent) or '(root)'}"
            if show:
                for a, b in sorted(pairs):
                    print(f"{where}: {a} -> {b}")
            for cycle in cycles(pairs):
                failed = True
                print(f"CYCLE in {where}: {' -> '.join(cycle)}")
    if not failed:
        print("no cycles between sibling modules")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
