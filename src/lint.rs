//! Helpers for `tenancy.lint()` (sql/lint.sql): finding the function calls of a policy
//! expression that Postgres evaluates once per row, and rewriting them to run once per statement.
//!
//! The input is `pg_get_expr()` output, which is regular: scalar sub-selects print as
//! `( SELECT ...)`, casts as `::type`, string literals in single quotes, SQL-standard forms that
//! look like calls (COALESCE, NULLIF, GREATEST, ...) in upper case.
use pgrx::prelude::*;

/// A function call found outside every sub-select: its (schema, name), whether its arguments
/// are constants only (so the call can be hoisted into a sub-select), and its byte span.
#[derive(Debug, PartialEq)]
struct Call {
    schema: Option<String>,
    name: String,
    constant_args: bool,
    start: usize,
    end: usize,
}

/// The index just past the string literal (`'...'`) or quoted identifier (`"..."`) starting at
/// `i`; a doubled delimiter inside stands for itself.
fn skip_delimited(b: &[u8], mut i: usize) -> usize {
    let delim = b[i];
    i += 1;
    while i < b.len() {
        if b[i] == delim {
            if b.get(i + 1) == Some(&delim) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    i
}

/// The index just past the parenthesized group starting at `i` (a `(`).
fn skip_group(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0;
    while i < b.len() {
        match b[i] {
            b'\'' => {
                i = skip_delimited(b, i);
                continue;
            }
            b'"' => {
                i = skip_delimited(b, i);
                continue;
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// `s[from..to]`, or "" where that is not a range of whole characters (unterminated input): these
/// helpers read any text a caller passes, and must never panic on it.
fn part(s: &str, from: usize, to: usize) -> &str {
    if from > to {
        return "";
    }
    s.get(from..to).unwrap_or("")
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$'
}

/// Reads a possibly qualified, possibly quoted name at `i`: its parts and the index past it.
fn read_name(s: &str, mut i: usize) -> (Vec<String>, usize) {
    let b = s.as_bytes();
    let mut parts = Vec::new();
    loop {
        if i < b.len() && b[i] == b'"' {
            let end = skip_delimited(b, i);
            parts.push(part(s, i + 1, end.saturating_sub(1)).replace("\"\"", "\""));
            i = end;
        } else if i < b.len() && is_ident_start(b[i]) {
            let start = i;
            while i < b.len() && is_ident_char(b[i]) {
                i += 1;
            }
            parts.push(s[start..i].to_owned());
        } else {
            break;
        }
        if i + 1 < b.len() && b[i] == b'.' && (b[i + 1] == b'"' || is_ident_start(b[i + 1])) {
            i += 1;
        } else {
            break;
        }
    }
    (parts, i)
}

/// The index past a type name following `::`.
fn skip_type(s: &str, i: usize) -> usize {
    let (_, mut i) = read_name(s, i);
    for suffix in [" varying", " precision", " with time zone", " without time zone"] {
        if s.get(i..).is_some_and(|rest| rest.starts_with(suffix)) {
            i += suffix.len();
        }
    }
    let b = s.as_bytes();
    if i < b.len() && b[i] == b'(' {
        let end = skip_group(b, i);
        if end > i + 1 && part(s, i + 1, end - 1).bytes().all(|c| c.is_ascii_digit() || c == b',' || c == b' ') {
            i = end;
        }
    }
    while s.get(i..).is_some_and(|rest| rest.starts_with("[]")) {
        i += 2;
    }
    i
}

/// True when an argument list holds only literals, casts of literals, numbers, NULL and booleans.
fn constant_args(args: &str) -> bool {
    let b = args.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' => i = skip_delimited(b, i),
            b':' if b.get(i + 1) == Some(&b':') => i = skip_type(args, i + 2),
            b' ' | b',' | b'(' | b')' | b'-' | b'.' => i += 1,
            c if c.is_ascii_digit() => i += 1,
            c if is_ident_start(c) => {
                let (parts, end) = read_name(args, i);
                let word = parts.join(".").to_ascii_lowercase();
                if !matches!(word.as_str(), "null" | "true" | "false") {
                    return false;
                }
                i = end;
            }
            _ => return false,
        }
    }
    true
}

fn calls(expr: &str) -> Vec<Call> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' => i = skip_delimited(b, i),
            b'(' => {
                let rest = expr.get(i + 1..).unwrap_or("").trim_start();
                if rest.get(..6).is_some_and(|w| w.eq_ignore_ascii_case("select")) {
                    i = skip_group(b, i); // a sub-select runs once per statement (or is its own query)
                } else {
                    i += 1;
                }
            }
            b':' if b.get(i + 1) == Some(&b':') => i = skip_type(expr, i + 2),
            c if c == b'"' || is_ident_start(c) => {
                let start = i;
                let (parts, end) = read_name(expr, i);
                i = end;
                if i < b.len() && b[i] == b'(' {
                    let close = skip_group(b, i);
                    let name = parts.last().cloned().unwrap_or_default();
                    let sql_standard_form = name.bytes().all(|c| !c.is_ascii_lowercase());
                    if !sql_standard_form {
                        out.push(Call {
                            schema: (parts.len() > 1).then(|| parts[parts.len() - 2].clone()),
                            name,
                            constant_args: constant_args(part(expr, i + 1, close.saturating_sub(1))),
                            start,
                            end: close,
                        });
                        // Calls nested in the arguments are evaluated per row as part of this one.
                        i = close;
                    }
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Internal, for tenancy.lint(): the function calls of a policy expression (pg_get_expr output)
/// that are outside every sub-select, hence evaluated per row.
#[pg_extern(immutable, strict, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _policy_calls(
    expr: &str,
) -> TableIterator<'static, (name!(schema, Option<String>), name!(name, String), name!(constant_args, bool))> {
    TableIterator::new(calls(expr).into_iter().map(|c| (c.schema, c.name, c.constant_args)).collect::<Vec<_>>())
}

/// Internal, for tenancy.lint(): the expression with each call of a function named in `names`
/// (with constant arguments) wrapped in a scalar sub-select, so it runs once per statement.
#[pg_extern(immutable, strict, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _wrap_policy_calls(expr: &str, names: Vec<String>) -> String {
    let mut out = String::with_capacity(expr.len() + 32);
    let mut at = 0;
    for c in calls(expr) {
        if c.constant_args && names.contains(&c.name) {
            out.push_str(part(expr, at, c.start));
            out.push_str("(SELECT ");
            out.push_str(part(expr, c.start, c.end));
            out.push(')');
            at = c.end;
        }
    }
    out.push_str(expr.get(at..).unwrap_or(""));
    out
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<(String, bool)> {
        calls(expr).into_iter().map(|c| (c.name, c.constant_args)).collect()
    }

    #[pg_test]
    fn calls_outside_sub_selects_are_found_and_those_inside_are_not() {
        assert_eq!(names("(user_id = auth.uid())"), vec![("uid".into(), true)]);
        assert_eq!(names("(user_id = ( SELECT auth.uid() AS uid))"), vec![]);
        assert_eq!(
            names("(organization_id = ANY (( SELECT tenancy.policy_organization_ids('read'::text) AS x)::uuid[]))"),
            vec![]
        );
        assert_eq!(
            names("((tenant_id)::text = (current_setting('app.tenant'::text))::character varying(255)::text)"),
            vec![("current_setting".into(), true)]
        );
        assert_eq!(names("is_member(organization_id)"), vec![("is_member".into(), false)]);
        assert_eq!(names("(COALESCE(a, b) = NULLIF(c, 'x'::text))"), vec![]);
        assert_eq!(names("(\"My Schema\".\"Odd \"\"fn\"\"\"() = 'f(x)'::text)"), vec![("Odd \"fn\"".into(), true)]);
    }

    #[pg_test]
    fn unterminated_and_multibyte_input_never_panics() {
        let inputs = [
            "f(",
            "f('",
            "x::",
            "x::character",
            "x::\"",
            "\"",
            "a.\"b",
            "f(\u{e9}",
            "\u{e9}(",
            "x::timestamp with",
            "(SELECT",
            "f()::numeric(",
            "f()::numeric(1,",
            "\u{f6}::\u{f6}",
            "a.b.",
            "x::t[",
            "'\u{1F600}'(",
            "\u{1F600}::x(9",
            "(sel\u{e9}ct 1)",
            "f(\u{1F600}",
            "x::numeric(\u{e9}",
            "\"\u{e9}",
        ];
        for s in inputs {
            let _ = calls(s);
            let _ = _wrap_policy_calls(s, vec!["f".into(), "x".into()]);
        }
    }

    #[pg_test]
    fn wrapping_hoists_constant_calls_into_a_sub_select() {
        assert_eq!(_wrap_policy_calls("(user_id = auth.uid())", vec!["uid".into()]), "(user_id = (SELECT auth.uid()))");
        assert_eq!(
            _wrap_policy_calls(
                "(is_member(organization_id) AND (owner = auth.uid()))",
                vec!["is_member".into(), "uid".into()]
            ),
            "(is_member(organization_id) AND (owner = (SELECT auth.uid())))",
            "a call that reads the row cannot be hoisted"
        );
    }
}
