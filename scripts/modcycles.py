#!/usr/bin/env python3
"""The module graph of the extension crate, and a check that it has no cycle (issue 16).

Usage: python3 scripts/modcycles.py [SRC_DIR]       (default: src)

Each file SRC_DIR/<name>.rs is module <name> (lib.rs is the crate root, `lib`). Module A depends on
module B when A's code, comments and string literals left out, names B through the crate:
`crate::B`, `use crate::{B, ...}` (nested groups too), or `super::B`; in lib.rs also a bare
`B::...` path (the root names its modules so, e.g. in `extension_sql_file!(requires = [...])`).
Test modules count: a cycle through test code is still a cycle.

Prints the graph (each module with what it uses, lowest layer first) and exits 0 when it is
acyclic; otherwise prints every cycle (each strongly connected component, with one cycle through
it and the lines that make each of its edges) and exits 1.
"""
import os
import re
import sys


def strip(text):
    """The text with comments, string literals and char literals blanked (newlines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif (m := re.compile(r'b?r(#*)"').match(text, i)) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'" and (m := re.compile(r"'(\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'\n])'").match(text, i)):
            out.append(" " * (m.end() - i))  # a char literal ('a', '\n', '\''); otherwise a lifetime
            i = m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def use_group_heads(code, start):
    """The first segment of each path in the `{...}` group opening at code[start]."""
    depth, item, heads = 0, "", []
    for ch in code[start:]:
        if ch == "{":
            depth += 1
            if depth == 1:
                continue
        elif ch == "}":
            depth -= 1
            if depth == 0:
                heads.append(item)
                break
        if depth == 1 and ch == ",":
            heads.append(item)
            item = ""
        else:
            item += ch
    return [re.split(r"::|\s|\{", h.strip())[0] for h in heads if h.strip()]


def graph(src):
    files = sorted(f for f in os.listdir(src) if f.endswith(".rs"))
    modules = {f[:-3] for f in files}
    edges = {}  # (a, b) -> [line numbers in a]
    root_items = set()
    if "lib" in modules:
        root = strip(open(os.path.join(src, "lib.rs"), encoding="utf-8").read())
        root_items = set(re.findall(r"\b(?:fn|mod|const|static|struct|enum|type|trait|macro_rules!)\s+(\w+)", root))
        root_items -= modules
    for f in files:
        a = f[:-3]
        code = strip(open(os.path.join(src, f), encoding="utf-8").read())
        line_of = lambda pos: code.count("\n", 0, pos) + 1
        refs = []
        for m in re.finditer(r"\bcrate\s*::\s*(\w+)", code):
            refs.append((m.group(1), m.start()))
        for m in re.finditer(r"\bcrate\s*::\s*\{", code):
            refs.extend((h, m.start()) for h in use_group_heads(code, m.end() - 1))
        for m in re.finditer(r"\bsuper\s*::\s*(\w+)", code):
            refs.append((m.group(1), m.start()))
        if a == "lib":
            for m in re.finditer(r"(?<![\w:])(\w+)\s*::", code):
                refs.append((m.group(1), m.start()))
        for b, pos in refs:
            if b in root_items and a != "lib":
                b = "lib"  # an item the crate root defines itself
            if b in modules and b != a:
                edges.setdefault((a, b), []).append(line_of(pos))
    return modules, edges


def sccs(nodes, succ):
    """Tarjan's strongly connected components."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in succ.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def a_cycle(comp, succ):
    """One cycle through the first module of strongly connected component `comp`."""
    start, inside = comp[0], set(comp)
    prev, queue = {start: None}, [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(succ.get(v, ())):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w in inside and w not in prev:
                prev[w] = v
                queue.append(w)
    return [start]


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    modules, edges = graph(src)
    succ = {}
    for a, b in edges:
        succ.setdefault(a, set()).add(b)
    cycles = [c for c in sccs(modules, succ) if len(c) > 1]
    if cycles:
        for comp in cycles:
            cyc = a_cycle(comp, succ)
            print(f"modcycles: CYCLE among {', '.join(comp)}: {' -> '.join(cyc)}")
            for a, b in zip(cyc, cyc[1:]):
                lines = ", ".join(str(n) for n in sorted(set(edges[(a, b)])))
                print(f"  {a} -> {b}: {src}/{a}.rs line {lines}")
            inner = sorted(f"{a}->{b}" for a, b in edges if a in comp and b in comp)
            print(f"  every dependency inside it: {' '.join(inner)}")
        print(f"modcycles: {len(cycles)} cycle(s) among the modules of {src}/")
        return 1
    # Lowest layer first: a module after everything it uses.
    depth = {}

    def layer(v):
        if v not in depth:
            depth[v] = 1 + max((layer(w) for w in succ.get(v, ())), default=-1)
        return depth[v]

    for v in sorted(modules, key=lambda v: (layer(v), v)):
        print(f"  {layer(v)} {v:<13} uses {', '.join(sorted(succ.get(v, ()))) or '-'}")
    print(f"modcycles: {len(modules)} modules, {len(edges)} dependencies, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
