//! The policies enable_isolation writes, exercised over real connections: an isolation matrix
//! (actors x commands, both modes, both column types), and the plans Postgres makes through them.
use std::collections::BTreeMap;
use std::io::{Read, Write};

use postgres::Client;
use tenancy_client_tests::*;

const USER_V: &str = "cccccccc-0000-0000-0000-000000000003"; // viewer of A
const USER_W: &str = "dddddddd-0000-0000-0000-000000000004"; // member (writes, cannot delete) of A
const USER_M: &str = "eeeeeeee-0000-0000-0000-000000000005"; // member of A and viewer of B
const USER_N: &str = "ffffffff-0000-0000-0000-000000000006"; // member of nothing

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Org {
    A,
    B,
}
use Org::{A, B};

impl Org {
    fn other(self) -> Org {
        if self == A {
            B
        } else {
            A
        }
    }
}

/// What an actor may do with which organization's rows.
#[derive(Clone, Debug)]
struct Perms {
    read: Vec<Org>,
    write: Vec<Org>,
    delete: Vec<Org>,
    /// where a row inserted without a tenant value lands (the column default)
    default: Option<Org>,
}

fn perms(read: &[Org], write: &[Org], delete: &[Org], default: Option<Org>) -> Perms {
    Perms { read: read.to_vec(), write: write.to_vec(), delete: delete.to_vec(), default }
}

struct Actor {
    name: &'static str,
    login: String,
    user: Option<&'static str>,
    /// organization chosen with set_organization() in context mode
    choose: Option<Org>,
    membership: Perms,
    context: Perms,
}

struct Table {
    /// as written in SQL (quoted where needed)
    sql: String,
    /// the tenant column, quoted
    col: String,
    text: bool,
    mode: &'static str,
    view: String,
}

impl Table {
    fn org(&self, o: Org) -> &'static str {
        match (self.text, o) {
            (false, A) => ORG_A,
            (false, B) => ORG_B,
            (true, A) => "org-a",
            (true, B) => "org-b",
        }
    }
    fn org_of(&self, v: &str) -> Org {
        if v == self.org(A) {
            A
        } else {
            assert_eq!(v, self.org(B), "tenant value");
            B
        }
    }
}

type State = BTreeMap<i32, (Org, String)>;

fn seed() -> State {
    let mut s = State::new();
    for (id, o) in [(1, A), (2, A), (3, A), (11, B), (12, B), (13, B)] {
        s.insert(id, (o, format!("seed-{id}")));
    }
    s
}

fn reset(su: &mut Client, t: &Table) {
    let mut sql = format!("DELETE FROM {};", t.sql);
    for (id, (o, body)) in seed() {
        sql.push_str(&format!("INSERT INTO {} (id, {}, body) VALUES ({id}, '{}', '{body}');", t.sql, t.col, t.org(o)));
    }
    su.batch_execute(&sql).unwrap();
}

fn state(su: &mut Client, t: &Table) -> State {
    su.query(&format!("SELECT id, {}::text, body FROM {} ORDER BY id", t.col, t.sql), &[])
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i32>(0), (t.org_of(r.get::<_, &str>(1)), r.get::<_, String>(2))))
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Cmd {
    Select,
    CopyTo,
    /// a view the table owner created (it reads the table as its owner)
    View,
    /// a view created WITH (security_invoker = true) (it reads the table as the caller)
    InvokerView,
    InsertOwn,
    InsertOther,
    InsertDefault,
    UpdateAll,
    UpdateMove,
    DeleteAll,
    UpsertOther,
    UpsertOwn,
    UpsertMove,
    CopyFrom,
}

const COMMANDS: [Cmd; 14] = [
    Cmd::Select,
    Cmd::CopyTo,
    Cmd::View,
    Cmd::InvokerView,
    Cmd::InsertOwn,
    Cmd::InsertOther,
    Cmd::InsertDefault,
    Cmd::UpdateAll,
    Cmd::UpdateMove,
    Cmd::DeleteAll,
    Cmd::UpsertOther,
    Cmd::UpsertOwn,
    Cmd::UpsertMove,
    Cmd::CopyFrom,
];

fn first_row(o: Org) -> i32 {
    if o == A {
        1
    } else {
        11
    }
}

/// The rows the actor read, as (id, org).
fn read_rows(c: &mut postgres::Transaction, t: &Table, cmd: Cmd) -> Result<Vec<(i32, Org)>, postgres::Error> {
    match cmd {
        Cmd::Select | Cmd::View | Cmd::InvokerView => {
            let invoker_view = format!("{}_invoker", t.view);
            let from = match cmd {
                Cmd::View => &t.view,
                Cmd::InvokerView => &invoker_view,
                _ => &t.sql,
            };
            Ok(c.query(&format!("SELECT id, {}::text FROM {from}", t.col), &[])?
                .iter()
                .map(|r| (r.get::<_, i32>(0), t.org_of(r.get::<_, &str>(1))))
                .collect())
        }
        _ => {
            let mut out = String::new();
            c.copy_out(&format!("COPY {} (id, {}) TO STDOUT", t.sql, t.col))?.read_to_string(&mut out).unwrap();
            Ok(out
                .lines()
                .map(|l| {
                    let mut f = l.split('\t');
                    (f.next().unwrap().parse().unwrap(), t.org_of(f.next().unwrap()))
                })
                .collect())
        }
    }
}

/// Run a writing command; errors are expected outcomes (refusals), not failures.
fn write(c: &mut postgres::Transaction, t: &Table, cmd: Cmd, own: Org) -> Result<(), postgres::Error> {
    let (tb, col) = (&t.sql, &t.col);
    let other = own.other();
    let sql = match cmd {
        Cmd::InsertOwn => format!("INSERT INTO {tb} (id, {col}, body) VALUES (100, '{}', 'new')", t.org(own)),
        Cmd::InsertOther => format!("INSERT INTO {tb} (id, {col}, body) VALUES (101, '{}', 'new')", t.org(other)),
        Cmd::InsertDefault => format!("INSERT INTO {tb} (id, body) VALUES (102, 'new')"),
        Cmd::UpdateAll => format!("UPDATE {tb} SET body = 'updated'"),
        Cmd::UpdateMove => format!("UPDATE {tb} SET {col} = '{}' WHERE id = {}", t.org(other), first_row(own)),
        Cmd::DeleteAll => format!("DELETE FROM {tb}"),
        Cmd::UpsertOther => format!(
            "INSERT INTO {tb} (id, {col}, body) VALUES ({}, '{}', 'upserted') ON CONFLICT (id) DO UPDATE SET body = 'upserted'",
            first_row(other),
            t.org(own)
        ),
        Cmd::UpsertOwn => format!(
            "INSERT INTO {tb} (id, {col}, body) VALUES ({}, '{}', 'upserted') ON CONFLICT (id) DO UPDATE SET body = 'upserted'",
            first_row(own),
            t.org(own)
        ),
        Cmd::UpsertMove => format!(
            "INSERT INTO {tb} (id, {col}, body) VALUES ({}, '{}', 'x') ON CONFLICT (id) DO UPDATE SET {col} = '{}'",
            first_row(own),
            t.org(own),
            t.org(other)
        ),
        Cmd::CopyFrom => {
            let mut w = c.copy_in(&format!("COPY {tb} (id, {col}, body) FROM STDIN"))?;
            w.write_all(format!("103\t{}\tcopied\n", t.org(own)).as_bytes()).unwrap();
            return w.finish().map(|_| ());
        }
        _ => unreachable!(),
    };
    c.execute(&sql, &[]).map(|_| ())
}

/// The table after `cmd`, when the policies do exactly what the actor's permissions say.
fn expected(cmd: Cmd, p: &Perms, own: Org, bypass: bool) -> State {
    let mut s = seed();
    let other = own.other();
    let w = |o: Org| p.write.contains(&o);
    let r = |o: Org| p.read.contains(&o);
    match cmd {
        Cmd::InsertOwn if w(own) => {
            s.insert(100, (own, "new".into()));
        }
        Cmd::InsertOther if w(other) => {
            s.insert(101, (other, "new".into()));
        }
        Cmd::InsertDefault => {
            if let Some(d) = p.default.filter(|d| w(*d)) {
                s.insert(102, (d, "new".into()));
            }
        }
        Cmd::UpdateAll => {
            for (_, (o, body)) in s.iter_mut() {
                if w(*o) {
                    *body = "updated".into();
                }
            }
        }
        Cmd::UpdateMove if w(own) && w(other) => {
            s.get_mut(&first_row(own)).unwrap().0 = other;
        }
        Cmd::DeleteAll => s.retain(|_, (o, _)| !p.delete.contains(o)),
        Cmd::UpsertOther if w(own) && w(other) && r(other) => {
            s.get_mut(&first_row(other)).unwrap().1 = "upserted".into();
        }
        Cmd::UpsertOwn if w(own) && r(own) => {
            s.get_mut(&first_row(own)).unwrap().1 = "upserted".into();
        }
        Cmd::UpsertMove if w(own) && r(own) && w(other) => {
            s.get_mut(&first_row(own)).unwrap().0 = other;
        }
        // COPY FROM is refused by Postgres for every role row-level security applies to.
        Cmd::CopyFrom if bypass => {
            s.insert(103, (own, "copied".into()));
        }
        _ => {}
    }
    s
}

/// Changes the actor had no right to make: rows of organizations it may not write (or delete)
/// that were changed, created, moved or deleted.
fn leaks(before: &State, after: &State, p: &Perms) -> usize {
    let mut n = 0;
    for (id, (o, body)) in before {
        match after.get(id) {
            None if !p.delete.contains(o) => n += 1,
            Some((o2, b2)) if (o2, b2) != (o, body) && !(p.write.contains(o) && p.write.contains(o2)) => n += 1,
            _ => {}
        }
    }
    for (id, (o, _)) in after {
        if !before.contains_key(id) && !p.write.contains(o) {
            n += 1;
        }
    }
    n
}

fn actors(db: &str) -> Vec<Actor> {
    let app = format!("{db}_app");
    let all = [A, B];
    vec![
        Actor {
            name: "owner of A",
            login: app.clone(),
            user: Some(USER_A),
            choose: Some(A),
            membership: perms(&[A], &[A], &[A], Some(A)),
            context: perms(&[A], &[A], &[A], Some(A)),
        },
        Actor {
            name: "member of A (writes, may not delete)",
            login: app.clone(),
            user: Some(USER_W),
            choose: None,
            membership: perms(&[A], &[A], &[], Some(A)),
            context: perms(&[A], &[A], &[], Some(A)),
        },
        Actor {
            name: "viewer of A",
            login: app.clone(),
            user: Some(USER_V),
            choose: Some(A),
            membership: perms(&[A], &[], &[], Some(A)),
            context: perms(&[A], &[], &[], Some(A)),
        },
        Actor {
            name: "owner of B",
            login: app.clone(),
            user: Some(USER_B),
            choose: None,
            membership: perms(&[B], &[B], &[B], Some(B)),
            context: perms(&[B], &[B], &[B], Some(B)),
        },
        Actor {
            name: "member of A and viewer of B, B chosen in context mode",
            login: app.clone(),
            user: Some(USER_M),
            choose: Some(B),
            membership: perms(&[A, B], &[A], &[], Some(A)),
            context: perms(&[B], &[], &[], Some(B)),
        },
        Actor {
            name: "user with no membership",
            login: app.clone(),
            user: Some(USER_N),
            choose: None,
            membership: perms(&[], &[], &[], None),
            context: perms(&[], &[], &[], None),
        },
        Actor {
            name: "no context at all",
            login: app,
            user: None,
            choose: None,
            membership: perms(&[], &[], &[], None),
            context: perms(&[], &[], &[], None),
        },
        Actor {
            name: "table owner, no context",
            login: format!("{db}_owner"),
            user: None,
            choose: None,
            membership: perms(&[], &[], &[], None),
            context: perms(&[], &[], &[], None),
        },
        Actor {
            name: "BYPASSRLS role",
            login: format!("{db}_bypass"),
            user: None,
            choose: None,
            membership: perms(&all, &all, &all, None),
            context: perms(&all, &all, &all, None),
        },
    ]
}

/// Create the four matrix tables (membership/context x uuid/text), isolate them, and give every
/// role the table privileges, so that only the policies stand between a role and the rows.
fn matrix_db(db: &str) -> (Client, Vec<Table>) {
    let mut owner = two_tenant_db(db);
    role(&format!("{db}_bypass"), "BYPASSRLS");
    owner
        .batch_execute(&format!(
            "SELECT tenancy.add_member('{ORG_A}', '{USER_V}', 'viewer');
             SELECT tenancy.add_member('{ORG_A}', '{USER_W}', 'member');
             SELECT tenancy.add_member('{ORG_A}', '{USER_M}', 'member');
             SELECT tenancy.add_member('{ORG_B}', '{USER_M}', 'viewer');
             CREATE SCHEMA \"My Schema\"; GRANT USAGE ON SCHEMA \"My Schema\" TO PUBLIC;"
        ))
        .unwrap();
    let specs = [
        ("membership", false, "public.m_uuid".to_owned(), "organization_id"),
        ("membership", true, "public.m_text".to_owned(), "tenant_id"),
        ("context", false, "public.c_uuid".to_owned(), "organization_id"),
        // hostile identifiers: quotes, spaces, a semicolon, mixed case
        ("context", true, r#""My Schema"."Tenant ""Data""; DROP TABLE x; --""#.to_owned(), r#""Tenant Id""#),
    ];
    let mut tables = Vec::new();
    for (i, (mode, text, sql, col)) in specs.into_iter().enumerate() {
        let ty = if text { "varchar(255)" } else { "uuid" };
        let view = format!("public.view_{i}");
        owner
            .batch_execute(&format!(
                "CREATE TABLE {sql} (id int PRIMARY KEY, {col} {ty} NOT NULL, body text);
                 CREATE INDEX ON {sql} ({col}, id);
                 GRANT SELECT, INSERT, UPDATE, DELETE ON {sql} TO PUBLIC;
                 SELECT tenancy.enable_isolation($${sql}$$, $${}$$, '{mode}');
                 CREATE VIEW {view} AS SELECT * FROM {sql};
                 CREATE VIEW {view}_invoker WITH (security_invoker = true) AS SELECT * FROM {sql};
                 GRANT SELECT ON {view}, {view}_invoker TO PUBLIC;",
                col.trim_matches('"').replace("\"\"", "\"")
            ))
            .unwrap();
        tables.push(Table { sql, col: col.to_owned(), text, mode, view });
    }
    (owner, tables)
}

fn begin<'a>(c: &'a mut Client, a: &Actor, mode: &str) -> postgres::Transaction<'a> {
    let mut tx = c.transaction().unwrap();
    if let Some(u) = a.user {
        tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{u}'")).unwrap();
    }
    if let (Some(o), "context") = (a.choose, mode) {
        let org = if o == A { ORG_A } else { ORG_B };
        tx.batch_execute(&format!("SELECT tenancy.set_organization('{org}')")).unwrap();
    }
    tx
}

#[test]
fn isolation_matrix_no_tenant_reads_writes_moves_or_deletes_another_tenants_rows() {
    let db = "iso_matrix";
    let (_owner, tables) = matrix_db(db);
    let actors = actors(db);
    let mut su = connect("postgres", db);
    let (mut cases, mut leaked, mut wrong) = (0, 0, Vec::new());
    for t in &tables {
        for a in &actors {
            let p = if t.mode == "context" { &a.context } else { &a.membership };
            let bypass = a.name == "BYPASSRLS role";
            let own = p.write.first().or(p.read.first()).copied().unwrap_or(A);
            let mut c = connect(&a.login, db);
            for cmd in COMMANDS {
                cases += 1;
                reset(&mut su, t);
                let mut tx = begin(&mut c, a, t.mode);
                if matches!(cmd, Cmd::Select | Cmd::CopyTo | Cmd::View | Cmd::InvokerView) {
                    let rows =
                        read_rows(&mut tx, t, cmd).unwrap_or_else(|e| panic!("{} {cmd:?} on {}: {e}", a.name, t.sql));
                    // Through the owner's view the table is read as its owner, who has no BYPASSRLS:
                    // the policies apply, with the caller's (here: no) context.
                    let readable: &[Org] = if bypass && matches!(cmd, Cmd::View) { &[] } else { &p.read };
                    let foreign = rows.iter().filter(|(_, o)| !readable.contains(o)).count();
                    let want = 3 * readable.len();
                    leaked += foreign;
                    if rows.len() != want {
                        wrong.push(format!(
                            "{} | {} | {cmd:?}: read {} rows, expected {want}",
                            t.sql,
                            a.name,
                            rows.len()
                        ));
                    }
                    continue;
                }
                let outcome = write(&mut tx, t, cmd, own).and_then(|_| tx.commit());
                let after = state(&mut su, t);
                let before = seed();
                let n = leaks(&before, &after, p);
                leaked += n;
                let want = expected(cmd, p, own, bypass);
                if after != want {
                    wrong.push(format!(
                        "{} | {} | {cmd:?} ({}): {n} leak(s); table {after:?}, expected {want:?}",
                        t.sql,
                        a.name,
                        match &outcome {
                            Ok(()) => "ok".to_owned(),
                            Err(e) => e.to_string(),
                        }
                    ));
                }
            }
        }
    }
    eprintln!(
        "isolation matrix: {} tables x {} actors x {} commands = {cases} cases run, {leaked} leaks found, {} wrong results",
        tables.len(),
        actors.len(),
        COMMANDS.len(),
        wrong.len()
    );
    assert_eq!(leaked, 0, "rows of another tenant were read or written:\n{}", wrong.join("\n"));
    assert!(wrong.is_empty(), "expected allows or refusals did not happen:\n{}", wrong.join("\n"));
    assert_eq!(cases, 4 * 9 * 14);
}

fn explain(c: &mut postgres::Transaction, sql: &str) -> String {
    c.query(&format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {sql}"), &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The context is looked up once per statement (an InitPlan run once), never per row (a SubPlan),
/// and the tenant column's index answers both a tenant-wide scan and a point lookup.
#[test]
fn the_context_is_read_once_per_statement_and_the_tenant_index_is_used() {
    let db = "iso_plan";
    let mut owner = two_tenant_db(db);
    let app = format!("{db}_app");
    for (mode, text) in [("membership", false), ("membership", true), ("context", false), ("context", true)] {
        let (tb, col, ty) = if text {
            (format!("{mode}_text"), "tenant_id", "varchar(255)")
        } else {
            (format!("{mode}_uuid"), "organization_id", "uuid")
        };
        // 2% of the rows belong to A, the rest to 49 other tenants; the primary key is tenant-scoped.
        let value = if text {
            "CASE WHEN g % 50 = 0 THEN 'org-a' ELSE 'org-x' || (g % 50) END"
        } else {
            "CASE WHEN g % 50 = 0 THEN '00000000-0000-0000-0000-00000000000a'::uuid ELSE ('00000000-0000-0000-0000-0000000000' || lpad((g % 50)::text, 2, '0'))::uuid END"
        };
        owner
            .batch_execute(&format!(
                "CREATE TABLE {tb} (id int NOT NULL, {col} {ty} NOT NULL, body text, PRIMARY KEY ({col}, id));
                 INSERT INTO {tb} SELECT g, {value}, 'row ' || g FROM generate_series(1, 50000) g;
                 ANALYZE {tb};
                 GRANT SELECT ON {tb} TO PUBLIC;
                 SELECT tenancy.enable_isolation('{tb}', '{col}', '{mode}');"
            ))
            .unwrap();
        let mut c = connect(&app, db);
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
        if mode == "context" {
            tx.batch_execute(&format!("SELECT tenancy.set_organization('{ORG_A}')")).unwrap();
        }
        let n: i64 = tx.query_one(&format!("SELECT count(*) FROM {tb}"), &[]).unwrap().get(0);
        assert_eq!(n, 1000, "{tb}: A's rows, all of them and nothing else");

        for (what, sql) in [
            ("tenant-wide scan", format!("SELECT * FROM {tb}")),
            ("point lookup", format!("SELECT * FROM {tb} WHERE id = 100")),
        ] {
            let plan = explain(&mut tx, &sql);
            let lines: Vec<&str> = plan.lines().collect();
            assert!(!plan.contains("SubPlan"), "{tb} {what}: the context must not be evaluated per row:\n{plan}");
            // The InitPlan node itself (PostgreSQL 18 also names it inside conditions: "(InitPlan 1).col1").
            let init = lines
                .iter()
                .position(|l| l.trim_start().starts_with("InitPlan"))
                .unwrap_or_else(|| panic!("{tb} {what}: no InitPlan:\n{plan}"));
            assert!(lines[init + 1].contains("loops=1"), "{tb} {what}: the InitPlan runs once:\n{plan}");
            let cond = lines
                .iter()
                .find(|l| l.contains("Index Cond") && l.contains(col))
                .unwrap_or_else(|| panic!("{tb} {what}: no index condition on {col}:\n{plan}"));
            if what == "point lookup" {
                assert!(cond.contains("id = 100"), "{tb}: the point lookup uses the tenant-scoped key:\n{plan}");
                assert!(
                    plan.contains("Index Scan") || plan.contains("Index Only Scan"),
                    "{tb}: an index scan:\n{plan}"
                );
            }
            eprintln!("plan {tb} ({what}): {}", cond.trim());
        }
    }
}

/// Issue 17: a list page (`ORDER BY created_at DESC LIMIT 20`, no tenant filter in the query) in
/// the default mode, for a transaction acting for one organization (set_organization, the JWT's
/// organization claim, the user's default organization), reads the `(tenant, created_at)` index
/// backwards and stops after 20 rows: no Sort node, whatever the tenant's size. uuid and slug
/// columns (text and character(n)); the rows are exactly the newest 20 of the organization.
#[test]
fn the_default_mode_serves_a_list_page_in_index_order() {
    let db = "iso_listpage";
    let mut owner = two_tenant_db(db);
    let app = format!("{db}_app");
    for (tb, col, ty) in [
        ("lp_uuid", "organization_id", "uuid"),
        ("lp_text", "tenant_id", "text"),
        ("lp_char", "tenant_id", "character(8)"),
    ] {
        let (a, other) = if ty == "uuid" {
            (format!("'{ORG_A}'::uuid"), format!("'{ORG_B}'::uuid"))
        } else {
            ("'org-a'".to_string(), "'org-b'".to_string())
        };
        // A holds 1 row in 10 (5,000 of 50,000), interleaved with B's, so a sort would be visible.
        owner
            .batch_execute(&format!(
                "CREATE TABLE {tb} (id int PRIMARY KEY, {col} {ty} NOT NULL,
                                    created_at timestamptz NOT NULL, body text);
                 INSERT INTO {tb} SELECT g, CASE WHEN g % 10 = 0 THEN {a} ELSE {other} END,
                                         timestamptz '2026-01-01' + g * interval '1 minute', 'row ' || g
                   FROM generate_series(1, 50000) g;
                 CREATE INDEX ON {tb} ({col}, created_at);
                 ANALYZE {tb};
                 GRANT SELECT ON {tb} TO PUBLIC;
                 SELECT tenancy.enable_isolation('{tb}', '{col}');"
            ))
            .unwrap();
        let mode: String = owner
            .query_one("SELECT mode FROM tenancy.tenant_tables WHERE relid = $1::text::regclass", &[&tb])
            .unwrap()
            .get(0);
        assert_eq!(mode, "context", "{tb}: the default mode of a newly isolated table");
        let newest: Vec<i32> = (0..20).map(|k| 50000 - 10 * k).collect();
        let sql = format!("SELECT id FROM {tb} ORDER BY created_at DESC LIMIT 20");
        for how in ["set_organization", "JWT organization claim", "default organization"] {
            let mut c = connect(&app, db);
            let mut tx = c.transaction().unwrap();
            match how {
                "set_organization" => tx
                    .batch_execute(&format!(
                        "SET LOCAL tenancy.user_id = '{USER_A}'; SELECT tenancy.set_organization('{ORG_A}')"
                    ))
                    .unwrap(),
                "JWT organization claim" => tx
                    .batch_execute(&format!(
                        "SELECT set_config('request.jwt.claims', '{{\"sub\": \"{USER_A}\", \"organization_id\": \"{ORG_A}\"}}', true)"
                    ))
                    .unwrap(),
                _ => tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap(),
            }
            let ids: Vec<i32> = tx.query(&sql, &[]).unwrap().iter().map(|r| r.get(0)).collect();
            assert_eq!(ids, newest, "{tb} ({how}): the 20 newest rows of A, and only A's");
            let plan = explain(&mut tx, &sql);
            assert!(!plan.contains("Sort"), "{tb} ({how}): the list page must not sort the tenant's rows:\n{plan}");
            assert!(
                plan.contains(&format!("Index Scan Backward using {tb}_{col}_created_at_idx")),
                "{tb} ({how}): the (tenant, created_at) index read backwards:\n{plan}"
            );
            let scanned = plan
                .lines()
                .find(|l| l.contains("Index Scan Backward"))
                .and_then(|l| l.split("rows=").nth(1))
                .and_then(|r| r.split(|ch: char| !ch.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(u32::MAX);
            assert!(scanned <= 20, "{tb} ({how}): it stops after 20 index entries, read {scanned}:\n{plan}");
            eprintln!("list page {tb} ({how}): index order, {scanned} rows read, no Sort");
        }
    }
}

/// Supabase / PostgREST: policies for the `authenticated` role only, the user from the JWT.
/// Other roles get no policy at all, which under forced row-level security means no rows.
#[test]
fn policies_for_the_authenticated_role_read_the_jwt_and_leave_other_roles_with_nothing() {
    let db = "iso_jwt";
    let mut owner = two_tenant_db(db);
    role(&format!("{db}_authenticated"), "");
    owner
        .batch_execute(&format!(
            "CREATE TABLE docs (id int PRIMARY KEY, organization_id uuid NOT NULL, body text);
             INSERT INTO docs VALUES (1, '{ORG_A}', 'a'), (2, '{ORG_B}', 'b');
             GRANT SELECT, INSERT ON docs TO PUBLIC;
             SELECT tenancy.enable_isolation('docs', roles => '{{{db}_authenticated}}');"
        ))
        .unwrap();
    let claims = format!(r#"{{"sub":"{USER_B}","role":"authenticated"}}"#);
    let mut c = connect(&format!("{db}_authenticated"), db);
    let mut tx = c.transaction().unwrap();
    tx.execute("SELECT set_config('request.jwt.claims', $1, true)", &[&claims]).unwrap();
    let ids: Vec<i32> = tx.query("SELECT id FROM docs", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![2], "the JWT subject (owner of B) sees B's row only");
    let r = tx.execute(&format!("INSERT INTO docs VALUES (3, '{ORG_A}', 'forged')"), &[]);
    assert_eq!(sqlstate(r), "42501", "and cannot write into A");
    drop(tx);

    let mut other = connect(&format!("{db}_app"), db);
    let mut tx = other.transaction().unwrap();
    tx.execute("SELECT set_config('request.jwt.claims', $1, true)", &[&claims]).unwrap();
    let n: i64 = tx.query_one("SELECT count(*) FROM docs", &[]).unwrap().get(0);
    assert_eq!(n, 0, "a role the policies do not name gets no rows, whatever its context");
}
