#!/usr/bin/env python3
"""No function over 80 lines without a reason (issue 16).

Usage: python3 scripts/longfns.py [ROOT]     (default: the repository this script is in)
       python3 scripts/longfns.py --self-check

Measures every function of ROOT/src/*.rs (`fn` items, as rustfmt lays them out: the item ends at
the first line holding only `}` at the indentation of its `fn` line, or at its own line when it ends
with `}` or `;`) and every CREATE FUNCTION / CREATE PROCEDURE of ROOT/sql/*.sql and ROOT/sql/*/*.sql
(sql/versions left out: generated), from its first line to its last. A function longer than LIMIT
lines must say why in its leading comment (the `//`/`///` lines and attributes just above a Rust
`fn`, the `--` lines just above a CREATE), with a line containing `reason:`. Lists every function
over the limit and fails (exit 1) when one has no reason; otherwise prints one line.

--self-check plants an unexplained long function in a copy of src/ and of sql/: each must be found,
and the unplanted copy must pass.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

LIMIT = 80
RUST_FN = re.compile(r"^(\s*)(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+\"C\"\s+)?fn\s+(\w+)")
SQL_CREATE = re.compile(r"^CREATE (?:OR REPLACE )?(FUNCTION|PROCEDURE) ([\w.]+)\s*\(", re.I)
SQL_BODY = re.compile(r"\$([A-Za-z_]*)\$")


def leading(lines, i, prefixes):
    """The comment lines just above line i (0-based), attributes and blank-free."""
    out = []
    j = i - 1
    while j >= 0 and lines[j].strip().startswith(prefixes):
        out.append(lines[j])
        j -= 1
    return out


def rust(root):
    found = []
    for path in sorted(glob.glob(os.path.join(root, "src", "*.rs"))):
        rel = os.path.relpath(path, root)
        lines = open(path).read().split("\n")
        for i, line in enumerate(lines):
            m = RUST_FN.match(line)
            if not m:
                continue
            indent = m.group(1)
            end = None
            for j in range(i, len(lines)):
                s = lines[j]
                if j > i and s.startswith(indent) and s[len(indent):] == "}":
                    end = j
                    break
                if j == i and (s.rstrip().endswith("}") or s.rstrip().endswith(";")):
                    end = j
                    break
            if end is None:
                continue
            found.append((rel, i + 1, m.group(2), end - i + 1, leading(lines, i, ("//", "#["))))
    return found


def sql(root):
    found = []
    paths = sorted(glob.glob(os.path.join(root, "sql", "**", "*.sql"), recursive=True))
    for path in paths:
        rel = os.path.relpath(path, root)
        if rel.startswith(os.path.join("sql", "versions", "")):
            continue
        lines = open(path).read().split("\n")
        for i, line in enumerate(lines):
            m = SQL_CREATE.match(line)
            if not m:
                continue
            # The body is the first dollar-quoted string; the function ends on the line closing it.
            end, tag = None, None
            for j in range(i, len(lines)):
                for b in SQL_BODY.finditer(lines[j]):
                    if tag is None:
                        tag = b.group(0)
                        rest = lines[j][b.end():]
                        if tag in rest:
                            end = j
                        break
                    elif b.group(0) == tag:
                        end = j
                        break
                if end is not None:
                    break
            if end is None:
                continue
            found.append((rel, i + 1, m.group(2), end - i + 1, leading(lines, i, ("--",))))
    return found


def check(root):
    long_ones, problems = [], []
    for rel, line, name, n, comment in rust(root) + sql(root):
        if n <= LIMIT:
            continue
        reason = any("reason:" in c for c in comment)
        long_ones.append(f"{rel}:{line}: {name} ({n} lines){'' if reason else ' WITHOUT A REASON'}")
        if not reason:
            problems.append(long_ones[-1])
    return long_ones, problems


def self_check(root):
    body = "\n".join(f"    let _x{i} = {i};" for i in range(LIMIT + 5))
    rust_plant = f"\n/// Planted.\nfn planted_long() {{\n{body}\n}}\n"
    sql_body = "\n".join(f"    PERFORM {i};" for i in range(LIMIT + 5))
    sql_plant = (f"\n-- Planted.\nCREATE FUNCTION tenancy._planted_long() RETURNS void\n"
                 f"LANGUAGE plpgsql AS $$\nBEGIN\n{sql_body}\nEND $$;\n")
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for what, rel, plant, expect in [(None, None, None, None),
                                         ("a long Rust fn", "src/lib.rs", rust_plant, "planted_long"),
                                         ("a long SQL function", "sql/api.sql", sql_plant, "tenancy._planted_long")]:
            copy = os.path.join(tmp, "repo")
            shutil.rmtree(copy, ignore_errors=True)
            for d in ("src", "sql"):
                shutil.copytree(os.path.join(root, d), os.path.join(copy, d), ignore=shutil.ignore_patterns("versions"))
            if rel:
                with open(os.path.join(copy, rel), "a") as f:
                    f.write(plant)
            r = subprocess.run([sys.executable, os.path.abspath(__file__), copy], capture_output=True, text=True)
            if rel is None and r.returncode != 0:
                print("longfns self-check: the unplanted copy fails:\n" + r.stdout)
                failures += 1
            elif rel and (r.returncode == 0 or expect not in r.stdout):
                print(f"longfns self-check: {what} planted in {rel} went unseen:\n{r.stdout}")
                failures += 1
    if failures:
        sys.exit(1)
    print("longfns: self-check: a long Rust fn and a long SQL function planted without a reason are found")


def main():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if sys.argv[1:] == ["--self-check"]:
        self_check(here)
        return
    root = sys.argv[1] if len(sys.argv) > 1 else here
    long_ones, problems = check(root)
    if problems:
        print("\n".join(long_ones))
        print(f"longfns: {len(problems)} function(s) over {LIMIT} lines without a `reason:` in their leading comment")
        sys.exit(1)
    print(f"longfns: {len(rust(root))} Rust and {len(sql(root))} SQL functions, {len(long_ones)} over {LIMIT} lines, "
          f"each with its reason ({', '.join(l.split(': ')[1].split(' (')[0] for l in long_ones) or 'none'})")


if __name__ == "__main__":
    main()
