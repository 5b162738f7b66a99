#!/usr/bin/env python3
"""tenancy's error vocabulary, checked across Rust, SQL and the documentation (issue 16).

Usage: python3 scripts/errors.py [ROOT]     (default: the repository this script is in)
       python3 scripts/errors.py --self-check

Reads
  (a) the conditions of `enum Error` in ROOT/src/errors.rs and the SQLSTATE of each (the arms of
      `Error::code`), every Rust raise site in ROOT/src/*.rs (`Error::X.raise(`, the constructors
      of src/errors.rs such as `Error::not_registered(`, `spi(` for Internal);
  (b) every RAISE EXCEPTION of ROOT/sql/*.sql and ROOT/sql/*/*.sql (the install scripts in
      sql/versions are generated from them and left out), its `ERRCODE = '<condition name or SQLSTATE>'`;
  (c) the table of ROOT/docs/errors.md: `| `SQLSTATE` condition_name | `Variant`, ... | when |`;
and fails (exit 1, every problem listed) when
  - Rust raises past the enum: `PgSqlErrorCode::`, `ErrorReport`, `ereport`, `error!` anywhere but
    src/errors.rs;
  - a RAISE EXCEPTION has no ERRCODE (it would be P0001), or one whose SQLSTATE is no condition's;
  - a message (a Rust raise's first argument, a RAISE EXCEPTION's format) does not start with
    `tenancy: ` or `tenancy.<function>: ` (the style src/errors.rs documents);
  - a variant has no SQLSTATE arm, or is raised nowhere (neither in Rust nor, by its SQLSTATE, in SQL);
  - a SQLSTATE raised anywhere has no row in docs/errors.md; a row names a SQLSTATE nobody raises
    (unless its text says "(Postgres)": PostgreSQL raises it itself), names it with another
    condition name than PostgreSQL's, or lists other variants than those the enum maps to it.
Otherwise prints one line, e.g. `errors: 27 conditions, 20 SQLSTATEs, 60 Rust raises, 127 SQL raises, docs/errors.md matches`.

SQLSTATEs and condition names come from PostgreSQL's own utils/errcodes.h (`pg_config
--includedir-server`; $TENANCY_PG_CONFIG or $PG_CONFIG name pg_config).

--self-check plants one violation of each kind in a copy of the repository and requires the
checker to find it (and the unplanted copy to pass).
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from modcycles import strip  # noqa: E402  (comments and string literals blanked, offsets kept)

BYPASS_ALLOWED = set()

# `tenancy: ` or `tenancy.<function>: ` (in src/errors.rs's constructors `tenancy.{function}: `).
MESSAGE_STYLE = re.compile(r"^tenancy(\.([a-z_][a-z0-9_]*|\{[a-z_]+\}))?: ")

STYLE_ALLOWED = set()


def errcodes():
    """{ERRCODE_NAME: SQLSTATE} and {condition_name: SQLSTATE} from PostgreSQL's errcodes.h."""
    candidates = []
    for var in ("TENANCY_PG_CONFIG", "PG_CONFIG"):
        if os.environ.get(var):
            try:
                inc = subprocess.run([os.environ[var], "--includedir-server"], capture_output=True, text=True,
                                     check=True).stdout.strip()
                candidates.append(os.path.join(inc, "utils", "errcodes.h"))
            except (OSError, subprocess.CalledProcessError):
                pass
    candidates += sorted(glob.glob("/usr/include/postgresql/*/server/utils/errcodes.h"), reverse=True)
    for path in candidates:
        if os.path.exists(path):
            by_macro = {}
            for name, chars in re.findall(r"#define\s+(ERRCODE_\w+)\s+MAKE_SQLSTATE\(([^)]*)\)", open(path).read()):
                by_macro[name] = "".join(re.findall(r"'(.)'", chars))
            # PL/pgSQL's condition names are the macro names in lower case (plerrcodes.h).
            by_condition = {m[len("ERRCODE_"):].lower(): c for m, c in by_macro.items()}
            return by_macro, by_condition
    sys.exit("errors: utils/errcodes.h not found (install postgresql-server-dev, or set PG_CONFIG)")


def line_of(text, pos):
    return text.count("\n", 0, pos) + 1


def first_argument(code, text, start):
    """The first argument of the call whose '(' is just before code[start]: (span text, literal or None).

    `code` is `text` with comments and literals blanked (same offsets), so commas and parentheses
    in strings do not count. The literal is the argument's first string literal (a format!'s)."""
    depth, i = 0, start
    while i < len(code):
        ch = code[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif ch == "," and depth == 0:
            break
        i += 1
    arg = text[start:i]
    m = re.search(r'"((?:[^"\\]|\\.)*)"', arg)
    return arg, (m.group(1) if m else None)


def rust(root, by_macro):
    """(variants {name: SQLSTATE}, raises [(file, line, variant, message literal or None)], problems)."""
    problems = []
    path = os.path.join(root, "src", "errors.rs")
    text = open(path).read()
    code = strip(text)
    m = re.search(r"\bpub enum Error\s*\{", code)
    if not m:
        return {}, [], ["src/errors.rs: no `pub enum Error`"]
    body = code[m.end():code.index("}", m.end())]
    body = re.sub(r"#\[[^\]]*\]", " ", body)
    names = re.findall(r"\b([A-Z]\w*)\s*,", body + ",")
    arms = dict(re.findall(r"Error::(\w+)\s*=>\s*PgSqlErrorCode::(ERRCODE_\w+)", code))
    variants = {}
    for n in names:
        if n not in arms:
            problems.append(f"src/errors.rs: Error::{n} has no arm in Error::code")
        elif arms[n] not in by_macro:
            problems.append(f"src/errors.rs: Error::{n} maps to {arms[n]}, which PostgreSQL does not define")
        else:
            variants[n] = by_macro[arms[n]]
    for n in arms:
        if n not in names:
            problems.append(f"src/errors.rs: Error::code has an arm for {n}, which is not a variant")
    # Constructors: `pub fn name(...) -> ! { Error::Variant.raise(`.
    constructors = dict(re.findall(r"pub fn (\w+)\s*\([^)]*\)\s*->\s*!\s*\{\s*Error::(\w+)\s*\.\s*raise\s*\(", code))

    raises = []
    for path in sorted(glob.glob(os.path.join(root, "src", "*.rs"))):
        f = os.path.basename(path)
        text = open(path).read()
        code = strip(text)
        rel = f"src/{f}"
        for m in re.finditer(r"\bError::(\w+)\s*\.\s*raise\s*\(", code):
            v = m.group(1)
            if v not in variants:
                problems.append(f"{rel}:{line_of(text, m.start())}: Error::{v} is not a condition of src/errors.rs")
            _, lit = first_argument(code, text, m.end())
            raises.append((rel, line_of(text, m.start()), v, lit))
        for m in re.finditer(r"\bError::([a-z_]\w*)\s*\(", code):
            if m.group(1) not in constructors:
                problems.append(f"{rel}:{line_of(text, m.start())}: Error::{m.group(1)} is not a raising constructor")
                continue
            # Its message is written once, in src/errors.rs (checked there).
            raises.append((rel, line_of(text, m.start()), constructors[m.group(1)], "tenancy: (constructor)"))
        for m in re.finditer(r"(?<![\w:])spi\s*\(", code):
            if not (f == "errors.rs" and code[max(0, m.start() - 7):m.start()] == "pub fn "):
                raises.append((rel, line_of(text, m.start()), "Internal", "tenancy: (spi)"))
        for m in re.finditer(r"\b(ErrorReport|ereport!?|error!)", code):
            if f != "errors.rs":
                problems.append(f"{rel}:{line_of(text, m.start())}: reports an error past the error enum ({m.group(1)}); "
                                "use Error::<condition>.raise")
        for m in re.finditer(r"\bPgSqlErrorCode::(ERRCODE_\w+)", code):
            if f == "errors.rs":
                continue
            if f not in BYPASS_ALLOWED:
                problems.append(f"{rel}:{line_of(text, m.start())}: raises {m.group(1)} past the error enum "
                                f"(use Error::<condition>.raise in src/errors.rs's vocabulary)")
                continue
            # An allowed legacy raise(code, message, hint): its SQLSTATE must still be a condition's.
            c = by_macro.get(m.group(1))
            v = next((n for n, s in sorted(variants.items()) if s == c), None)
            if v is None:
                problems.append(f"{rel}:{line_of(text, m.start())}: {m.group(1)} is no condition's SQLSTATE")
                continue
            comma = code.find(",", m.end())
            _, lit = first_argument(code, text, comma + 1) if comma >= 0 else ("", None)
            raises.append((rel, line_of(text, m.start()), v, lit))
    for rel, line, v, lit in raises:
        if lit is not None and not MESSAGE_STYLE.match(lit):
            problems.append(f"{rel}:{line}: message {lit[:60]!r} does not start with 'tenancy: ' or 'tenancy.<function>: '")
    return variants, raises, problems


def sql_statements(text):
    """(offset, statement text) of each RAISE in `text`, outside comments and string literals."""
    out, i, n = [], 0, len(text)
    word = re.compile(r"RAISE\b", re.I)
    while i < n:
        if text.startswith("--", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif text[i] == "'":
            j = i + 1
            while j < n and not (text[j] == "'" and text[j + 1:j + 2] != "'"):
                j += 2 if text[j] == "'" else 1
            i = j + 1
        elif word.match(text, i) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_.")):
            j, quoted = i, False
            while j < n and (quoted or text[j] != ";"):
                if text[j] == "'":
                    quoted = not quoted
                j += 1
            out.append((i, text[i:j]))
            i = j
        else:
            i += 1
    return out


def sql(root, by_condition):
    """(raises [(file, line, SQLSTATE)], re-raises, problems)."""
    raises, reraises, problems = [], 0, []
    codes = set(by_condition.values())
    for path in sorted(glob.glob(os.path.join(root, "sql", "**", "*.sql"), recursive=True)):
        rel = os.path.relpath(path, root)
        if rel.startswith(os.path.join("sql", "versions", "")):
            continue
        text = open(path).read()
        for pos, stmt in sql_statements(text):
            line = line_of(text, pos)
            level = re.match(r"RAISE\s+(\w+)", stmt, re.I)
            level = level.group(1).upper() if level else ""
            if level in ("WARNING", "NOTICE", "INFO", "LOG", "DEBUG"):
                continue
            e = re.search(r"\bERRCODE\s*=\s*(?:'([^']*)'|(\w+))", stmt, re.I)
            if e and e.group(2):
                reraises += 1  # ERRCODE = v_state / SQLSTATE: a caught error raised again with context
            elif not e:
                problems.append(f"{rel}:{line}: RAISE EXCEPTION without ERRCODE (it would be P0001 raise_exception)")
                continue
            else:
                c = e.group(1).lower()
                state = by_condition.get(c) or (c.upper() if c.upper() in codes else None)
                if state is None:
                    problems.append(f"{rel}:{line}: ERRCODE {e.group(1)!r} is not a PostgreSQL condition")
                    continue
                raises.append((rel, line, state))
            msg = re.match(r"RAISE\s+(?:EXCEPTION\s+)?'((?:[^']|'')*)'", stmt, re.I)
            if msg and not MESSAGE_STYLE.match(msg.group(1)) \
                    and not any(rel == a and msg.group(1).startswith(s) for a, s in STYLE_ALLOWED):
                problems.append(f"{rel}:{line}: message {msg.group(1)[:60]!r} does not start with 'tenancy: ' or "
                                "'tenancy.<function>: '")
    return raises, reraises, problems


def docs(root):
    """({SQLSTATE: (condition name, [variants], when)}, problems)."""
    rows, problems = {}, []
    path = os.path.join(root, "docs", "errors.md")
    for i, line in enumerate(open(path).read().splitlines(), 1):
        m = re.match(r"^\|\s*`([0-9A-Z]{5})`\s+(\w+)\s*\|(.*)\|(.*)\|\s*$", line)
        if not m:
            if re.match(r"^\|\s*`", line):
                problems.append(f"docs/errors.md:{i}: a table row not of the form | `SQLSTATE` name | `Variant`, ... | when |")
            continue
        state, name, conds, when = m.groups()
        if state in rows:
            problems.append(f"docs/errors.md:{i}: {state} has a second row")
        rows[state] = (name, re.findall(r"`(\w+)`", conds), when, i)
    if not rows:
        problems.append("docs/errors.md: no table rows found")
    return rows, problems


def check(root):
    by_macro, by_condition = errcodes()
    variants, rust_raises, problems = rust(root, by_macro)
    sql_raises, reraises, p = sql(root, by_condition)
    problems += p
    rows, p = docs(root)
    problems += p

    rust_states = {variants[v] for _, _, v, _ in rust_raises if v in variants}
    sql_states = {s for _, _, s in sql_raises}
    var_states = set(variants.values())
    for rel, line, s in sql_raises:
        if s not in var_states:
            problems.append(f"{rel}:{line}: raises {s}, which is no condition of src/errors.rs (add one, or use one)")
    used = {v for _, _, v, _ in rust_raises}
    for v, s in sorted(variants.items()):
        if v not in used and s not in sql_states:
            problems.append(f"src/errors.rs: Error::{v} ({s}) is raised nowhere (neither in Rust nor in sql/*.sql)")
    names = {}
    for n, c in by_condition.items():
        names.setdefault(c, n)
    for s in sorted(rust_states | sql_states):
        if s not in rows:
            problems.append(f"docs/errors.md: {s} ({names.get(s, '?')}) is raised but has no row")
    for s, (name, conds, when, i) in sorted(rows.items()):
        if by_condition.get(name) != s:
            problems.append(f"docs/errors.md:{i}: {s} is named {name}; PostgreSQL names it {names.get(s, '(unknown)')}")
        if s not in rust_states | sql_states and "(Postgres)" not in when:
            problems.append(f"docs/errors.md:{i}: {s} {name} is raised by nobody (mark it \"(Postgres)\" if PostgreSQL raises it)")
        expected = sorted(v for v, vs in variants.items() if vs == s)
        if sorted(conds) != expected:
            problems.append(f"docs/errors.md:{i}: {s} lists conditions {sorted(conds)}; src/errors.rs maps {expected} to it")
    if problems:
        for pr in problems:
            print(pr)
        print(f"errors: {len(problems)} problem(s)")
        return 1
    n_spi = sum(1 for r in rust_raises if r[3] == "tenancy: (spi)")
    print(f"errors: {len(variants)} conditions, {len(var_states)} SQLSTATEs, "
          f"{len(rust_raises) - n_spi} Rust raises (+{n_spi} spi() calls: Internal), "
          f"{len(sql_raises)} SQL raises (+{reraises} re-raised), docs/errors.md matches")
    return 0


def self_check(root):
    """Plant each kind of violation in a copy of root; the checker must find each."""
    plants = [
        ("a raise past the enum",
         "src/login.rs", lambda t: t + "\nfn planted() -> ! { crate::errors::raise(pgrx::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, \"tenancy: x\", \"\") }\n",
         "past the error enum"),
        ("an error! past the enum",
         "src/policies.rs", lambda t: t + "\nfn planted() { pgrx::error!(\"tenancy: x\") }\n",
         "past the error enum (error!)"),
        ("an undocumented SQLSTATE in SQL",
         "sql/api.sql", lambda t: t + "\nDO $$ BEGIN RAISE EXCEPTION 'tenancy: planted' USING ERRCODE = 'division_by_zero'; END $$;\n",
         "no condition of src/errors.rs"),
        ("a RAISE EXCEPTION without ERRCODE",
         "sql/api.sql", lambda t: t + "\nDO $$ BEGIN RAISE EXCEPTION 'tenancy: planted'; END $$;\n",
         "without ERRCODE"),
        ("a message in another style",
         "sql/backfill/07_rollback.sql", lambda t: t + "\nDO $$ BEGIN RAISE EXCEPTION 'planted: x' USING ERRCODE = 'internal_error'; END $$;\n",
         "does not start with"),
        ("a docs row nobody raises",
         "docs/errors.md", lambda t: t.replace("| `22004` ", "| `22012` division_by_zero | | planted |\n| `22004` ", 1),
         "raised by nobody"),
        ("a docs row listing another condition",
         "docs/errors.md", lambda t: t.replace("`NotRegistered`", "`NotRegistered`, `NullArgument`", 1),
         "lists conditions"),
    ]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for what, rel, plant, expect in [(None, None, None, None)] + plants:
            copy = os.path.join(tmp, "repo")
            shutil.rmtree(copy, ignore_errors=True)
            for d in ("src", "sql", "docs"):
                shutil.copytree(os.path.join(root, d), os.path.join(copy, d),
                                ignore=shutil.ignore_patterns("versions"))
            if rel:
                p = os.path.join(copy, rel)
                before = open(p).read()
                after = plant(before)
                assert after != before, f"self-check: the plant for {what} changed nothing in {rel}"
                open(p, "w").write(after)
            r = subprocess.run([sys.executable, os.path.abspath(__file__), copy], capture_output=True, text=True)
            if rel is None:
                if r.returncode != 0:
                    print("errors self-check: the unplanted copy fails:\n" + r.stdout)
                    failures += 1
            elif r.returncode == 0 or expect not in r.stdout:
                print(f"errors self-check: {what} planted in {rel} went unseen:\n{r.stdout}")
                failures += 1
    if failures:
        return 1
    print(f"errors: self-check: {len(plants)} planted violations found")
    return 0


if __name__ == "__main__":
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if sys.argv[1:] == ["--self-check"]:
        sys.exit(self_check(here))
    sys.exit(check(sys.argv[1] if len(sys.argv) > 1 else here))
