#!/usr/bin/env python3
"""Drafts the function part of an upgrade script from two install scripts that pgrx generated.

    python3 scripts/draft-upgrade.py OLD.sql NEW.sql > draft.sql

Every function and procedure of NEW is written as CREATE OR REPLACE (the upgrade test compares
the result with a fresh install, so an unchanged one costs nothing); one whose arguments or result
changed, or that NEW no longer has, is dropped first; every COMMENT ON FUNCTION/PROCEDURE of NEW
follows. Tables, policies, grants and the guard are written by hand around it.
"""
import re
import sys


def statements(sql):
    """Split SQL text into statements, respecting quotes, dollar quotes and comments."""
    out, cur, i, n = [], [], 0, len(sql)
    while i < n:
        c = sql[i]
        if sql.startswith('--', i):
            j = sql.find('\n', i)
            j = n if j < 0 else j
            i = j
            continue
        if sql.startswith('/*', i):
            j = sql.find('*/', i)
            i = n if j < 0 else j + 2
            continue
        if c in "'\"":
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            cur.append(sql[i:j + 1])
            i = j + 1
            continue
        m = re.match(r'\$[A-Za-z_0-9]*\$', sql[i:]) if c == '$' else None
        if m:
            tag = m.group(0)
            j = sql.find(tag, i + len(tag))
            j = n if j < 0 else j + len(tag)
            cur.append(sql[i:j])
            i = j
            continue
        if c == ';':
            s = ''.join(cur).strip()
            if s:
                out.append(s)
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    s = ''.join(cur).strip()
    if s:
        out.append(s)
    return out


HEAD = re.compile(r'^CREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE)\s+([^\s(]+)\s*\(', re.I | re.S)


def routines(sql):
    found = {}
    for st in statements(sql):
        m = HEAD.match(st)
        if not m:
            continue
        kind, name = m.group(1).upper(), m.group(2).replace('"', '')
        qualify = '.' not in name  # pgrx writes its functions unqualified: they land in @extschema@
        # the argument list: up to the matching parenthesis
        depth, j = 0, m.end() - 1
        while True:
            if st[j] == '(':
                depth += 1
            elif st[j] == ')':
                depth -= 1
                if depth == 0:
                    break
            j += 1
        args = st[m.end():j]
        args = re.sub(r'/\*.*?\*/', '', args, flags=re.S)
        args = ' '.join(args.split())
        rest = st[j + 1:]
        returns = re.match(r'\s*(RETURNS\s+.*?)\s+(?:LANGUAGE|STRICT|IMMUTABLE|STABLE|VOLATILE|PARALLEL|SET|AS|SECURITY|COST|ROWS)\b', rest, re.I | re.S)
        returns = ' '.join(re.sub(r'/\*.*?\*/', '', returns.group(1) if returns else '', flags=re.S).split()).lower()
        if qualify:
            name = 'tenancy.' + name
            st = st[:m.start(2)] + 'tenancy.' + st[m.start(2):]
        found[(name, args)] = (kind, returns, st)
    return found


def identity(args):
    """The argument types only (what DROP FUNCTION needs)."""
    types = []
    for a in [x.strip() for x in split_top(args)] if args else []:
        a = re.sub(r'\s+DEFAULT\s+.*$', '', a, flags=re.I | re.S)
        a = re.sub(r'^(IN|OUT|INOUT|VARIADIC)\s+', lambda m: m.group(1) + ' ', a, flags=re.I)
        if a.upper().startswith('OUT '):
            continue
        parts = a.split(None, 1)
        types.append(parts[1] if len(parts) == 2 and not parts[0].upper() in ('IN', 'VARIADIC') else a)
    return ', '.join(types)


def split_top(s):
    out, depth, cur = [], 0, ''
    for ch in s:
        if ch == '(':
            depth += 1
        elif ch == ')':
            depth -= 1
        if ch == ',' and depth == 0:
            out.append(cur)
            cur = ''
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return out


def main(old_path, new_path):
    old, new = routines(open(old_path).read()), routines(open(new_path).read())
    new_by_name = {}
    for (name, args) in new:
        new_by_name.setdefault(name, []).append(args)
    print('-- Functions and procedures (drafted by scripts/draft-upgrade.py from the generated install scripts).')
    for (name, args), (kind, returns, _) in sorted(old.items()):
        same = new.get((name, args))
        if same is None or same[1] != returns:
            print(f'DROP {kind} {name}({identity(args)});')
    for (name, args), (kind, returns, st) in sorted(new.items()):
        print(re.sub(r'^CREATE\s+(?:OR\s+REPLACE\s+)?', 'CREATE OR REPLACE ', st, flags=re.I) + ';')
        print()
    for st in statements(open(new_path).read()):
        if re.match(r'^COMMENT\s+ON\s+(FUNCTION|PROCEDURE)\b', st, re.I):
            print(st + ';')


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
