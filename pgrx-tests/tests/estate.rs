//! tenancy in the estate around it: a dump restored into a fresh database, DROP EXTENSION on a
//! converted database, a transaction-pooling pgbouncer in front of it, and a Supabase-style
//! managed install serving PostgREST requests.
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::error::DbError;
use postgres::{Client, Config, NoTls, SimpleQueryMessage};
use tenancy_client_tests::*;

const USER_C: &str = "cccccccc-0000-0000-0000-000000000003";
const USER_D: &str = "dddddddd-0000-0000-0000-000000000004";
/// The PostgreSQL binaries of the server under test (scripts/test.sh sets it for other majors).
fn pg_bin() -> String {
    std::env::var("TENANCY_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into())
}

type Rows = Vec<Vec<Option<String>>>;

/// Every row of `sql` as text (simple protocol: also works through a transaction pooler).
fn text_rows(c: &mut Client, sql: &str) -> Rows {
    c.simple_query(sql)
        .unwrap_or_else(|e| panic!("{sql}: {}", err_text(&e)))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect()),
            _ => None,
        })
        .collect()
}

fn count(c: &mut impl postgres::GenericClient, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {}", err_text(&e))).get(0)
}

/// A server error with its SQLSTATE, message and detail.
fn err_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {} (detail: {:?}, hint: {:?})", d.code().code(), d.message(), d.detail(), d.hint()),
        None => format!("{e:?}"),
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL client program connecting to the test cluster as the bootstrap superuser.
fn pg_tool(name: &str) -> Command {
    let mut cmd = Command::new(format!("{}/{name}", pg_bin()));
    cmd.args(["-h", "127.0.0.1", "-p", &port().to_string(), "-U", "postgres"]);
    cmd
}

/// A connection that records every NOTICE (or other non-error message) the server sends.
fn connect_with_notices(user: &str, db: &str) -> (Client, Arc<Mutex<Vec<DbError>>>) {
    let notices = Arc::new(Mutex::new(Vec::new()));
    let sink = notices.clone();
    let mut cfg: Config = format!("host=127.0.0.1 port={} user={user} dbname={db}", port()).parse().unwrap();
    cfg.notice_callback(move |n| sink.lock().unwrap().push(n));
    (cfg.connect(NoTls).unwrap(), notices)
}

/// Lines in `a` and not in `b`, and the other way round.
fn diff(a: &Rows, b: &Rows) -> String {
    let show = |r: &Vec<Option<String>>| format!("{r:?}");
    let (sa, sb): (BTreeSet<_>, BTreeSet<_>) = (a.iter().map(show).collect(), b.iter().map(show).collect());
    let mut out = String::new();
    for l in sa.difference(&sb) {
        out.push_str(&format!("\n  - {l}"));
    }
    for l in sb.difference(&sa) {
        out.push_str(&format!("\n  + {l}"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 1. pg_dump / restore
// ---------------------------------------------------------------------------------------------

const DUMP_DB: &str = "estate_dump";

/// What a dump of the converted database must carry, item by item, read by the superuser.
fn dump_snapshot(su: &mut Client) -> Vec<(&'static str, Rows)> {
    let tables = "('public.items'::regclass, 'public.parts'::regclass)";
    let queries: Vec<(&'static str, String)> = vec![
        ("tenancy.organizations", "SELECT * FROM tenancy.organizations ORDER BY id".into()),
        ("tenancy.memberships", "SELECT * FROM tenancy.memberships ORDER BY organization_id, user_id".into()),
        ("tenancy.invitations", "SELECT * FROM tenancy.invitations ORDER BY id".into()),
        (
            "tenancy.tenant_tables",
            "SELECT relid::text, tenant_column, column_type, mode, state, details, registered_at, updated_at
               FROM tenancy.tenant_tables ORDER BY 1"
                .into(),
        ),
        ("tenancy.roles", "SELECT * FROM tenancy.roles ORDER BY rank".into()),
        ("tenancy.lint_ignores", "SELECT * FROM tenancy.lint_ignores ORDER BY code, object".into()),
        ("tenancy.migration_log", "SELECT * FROM tenancy.migration_log ORDER BY id".into()),
        ("tenancy.migration_log_id_seq", "SELECT last_value, is_called FROM tenancy.migration_log_id_seq".into()),
        (
            "pg_policies",
            "SELECT tablename, policyname, permissive, roles::text, cmd, qual, with_check
               FROM pg_policies WHERE schemaname = 'public' ORDER BY 1, 2"
                .into(),
        ),
        (
            "RLS flags",
            format!("SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid IN {tables} ORDER BY 1"),
        ),
        (
            "constraints",
            format!(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
                  WHERE conrelid IN {tables} ORDER BY 1, 2"
            ),
        ),
        (
            "column defaults",
            format!("SELECT adrelid::regclass::text, pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid IN {tables} ORDER BY 1"),
        ),
        ("public.items", "SELECT * FROM public.items ORDER BY id".into()),
        ("public.parts", "SELECT * FROM public.parts ORDER BY id".into()),
        ("validate_client_data_integrity()", "SELECT * FROM tenancy.validate_client_data_integrity() ORDER BY 1".into()),
    ];
    queries.into_iter().map(|(name, q)| (name, text_rows(su, &q))).collect()
}

/// Who owns tenancy's catalog and functions, and with which privileges.
fn catalog_ownership(su: &mut Client) -> Rows {
    text_rows(
        su,
        "SELECT 'extension tenancy', extowner::regrole::text, '' FROM pg_extension WHERE extname = 'tenancy'
         UNION ALL
         SELECT 'table ' || relname, relowner::regrole::text, coalesce(relacl::text, '(owner only)')
           FROM pg_class WHERE relnamespace = 'tenancy'::regnamespace AND relkind IN ('r', 'S')
         UNION ALL
         SELECT 'function ' || oid::regprocedure::text, proowner::regrole::text, coalesce(proacl::text, '(default)')
           FROM pg_proc WHERE pronamespace = 'tenancy'::regnamespace
         ORDER BY 1",
    )
}

/// The rows of `table` the transaction sees, as (id, tenant value).
fn visible(tx: &mut postgres::Transaction, table: &str, col: &str) -> Vec<(i32, String)> {
    tx.query(&format!("SELECT id, {col}::text FROM {table} ORDER BY id"), &[])
        .unwrap_or_else(|e| panic!("{table}: {}", err_text(&e)))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn ids_of(rows: &[(i32, &str)], org: &str) -> Vec<(i32, String)> {
    rows.iter().filter(|(_, o)| *o == org).map(|(i, o)| (*i, o.to_string())).collect()
}

const ITEMS: [(i32, &str); 7] =
    [(1, ORG_A), (2, ORG_A), (3, ORG_A), (11, ORG_B), (12, ORG_B), (13, ORG_B), (14, ORG_B)];
const PARTS: [(i32, &str); 5] = [(1, "org-a"), (2, "org-a"), (11, "org-b"), (12, "org-b"), (13, "org-b")];

/// Isolation in a restored database, as the application role.
/// Tables `items` (uuid tenant column, membership mode) and `parts` (varchar slug column,
/// context mode), filled with ITEMS and PARTS and isolated by tenancy.
fn isolated_items_and_parts(c: &mut Client) {
    c.batch_execute(
        "CREATE TABLE public.items (id int PRIMARY KEY, organization_id uuid NOT NULL REFERENCES tenancy.organizations,
                                    body text);
         CREATE INDEX ON public.items (organization_id, id);
         CREATE TABLE public.parts (id int PRIMARY KEY,
                                    tenant_id varchar(255) NOT NULL REFERENCES tenancy.organizations (slug), body text);
         CREATE INDEX ON public.parts (tenant_id, id);
         GRANT SELECT, INSERT, UPDATE, DELETE ON public.items, public.parts TO PUBLIC;",
    )
    .unwrap();
    for (id, org) in ITEMS {
        c.execute("INSERT INTO public.items VALUES ($1, $2::text::uuid, $3)", &[&id, &org, &format!("item {id}")])
            .unwrap();
    }
    for (id, slug) in PARTS {
        c.execute("INSERT INTO public.parts VALUES ($1, $2, $3)", &[&id, &slug, &format!("part {id}")]).unwrap();
    }
    c.batch_execute(
        "SELECT tenancy.enable_isolation('public.items', mode => 'membership');
         SELECT tenancy.enable_isolation('public.parts', 'tenant_id');",
    )
    .unwrap();
}

fn check_isolation(db: &str, invitation_token: &str) {
    let mut app = connect(&format!("{DUMP_DB}_owner"), db);
    app.batch_execute(&format!("SET ROLE {DUMP_DB}_app")).unwrap();
    let who: String = app.query_one("SELECT current_user::text", &[]).unwrap().get(0);
    assert_eq!(who, format!("{DUMP_DB}_app"));

    // No context: nothing, in both modes.
    assert_eq!(count(&mut app, "SELECT count(*) FROM public.items"), 0, "{db}: no context sees no items");
    assert_eq!(count(&mut app, "SELECT count(*) FROM public.parts"), 0, "{db}: no context sees no parts");

    // Owner of A (membership mode: A's rows; context mode: the organization chosen).
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
    let org: Option<String> = tx.query_one("SELECT tenancy.current_organization_id()::text", &[]).unwrap().get(0);
    assert_eq!(org.as_deref(), Some(ORG_A), "{db}: A's default organization came back");
    assert_eq!(
        visible(&mut tx, "public.items", "organization_id"),
        ids_of(&ITEMS, ORG_A),
        "{db}: A sees only A's items"
    );
    tx.batch_execute(&format!("SELECT tenancy.set_organization('{ORG_A}')")).unwrap();
    assert_eq!(visible(&mut tx, "public.parts", "tenant_id"), ids_of(&PARTS, "org-a"), "{db}: A sees only A's parts");
    assert_eq!(sqlstate(tx.batch_execute(&format!("SELECT tenancy.set_organization('{ORG_B}')"))), "42501");
    drop(tx);
    for (sql, what) in [
        (format!("INSERT INTO public.items (id, organization_id, body) VALUES (900, '{ORG_B}', 'x')"), "insert into B"),
        (format!("UPDATE public.items SET organization_id = '{ORG_B}' WHERE id = 1"), "move a row to B"),
        (
            "INSERT INTO public.parts (id, tenant_id, body) VALUES (900, 'org-b', 'x')".to_string(),
            "insert a part into B",
        ),
    ] {
        let mut tx = app.transaction().unwrap();
        tx.batch_execute(&format!(
            "SET LOCAL tenancy.user_id = '{USER_A}'; SELECT tenancy.set_organization('{ORG_A}')"
        ))
        .unwrap();
        assert_eq!(sqlstate(tx.batch_execute(&sql)), "42501", "{db}: A may not {what}");
    }
    // A writes its own organization's rows, the default filling the tenant column.
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
    tx.batch_execute("INSERT INTO public.items (id, body) VALUES (901, 'mine')").unwrap();
    let o: String = tx.query_one("SELECT organization_id::text FROM public.items WHERE id = 901", &[]).unwrap().get(0);
    assert_eq!(o, ORG_A, "{db}: the restored default gives new rows the context's organization");
    assert_eq!(tx.execute(&format!("DELETE FROM public.items WHERE organization_id = '{ORG_B}'"), &[]).unwrap(), 0);
    tx.rollback().unwrap();

    // Owner of B.
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_B}'")).unwrap();
    assert_eq!(
        visible(&mut tx, "public.items", "organization_id"),
        ids_of(&ITEMS, ORG_B),
        "{db}: B sees only B's items"
    );
    tx.batch_execute(&format!("SELECT tenancy.set_organization('{ORG_B}')")).unwrap();
    assert_eq!(visible(&mut tx, "public.parts", "tenant_id"), ids_of(&PARTS, "org-b"), "{db}: B sees only B's parts");
    drop(tx);

    // C holds the custom read-only role in A, which the dump had to carry (tenancy.roles rows a
    // DBA added): reads A, may not write.
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_C}'")).unwrap();
    assert_eq!(visible(&mut tx, "public.items", "organization_id"), ids_of(&ITEMS, ORG_A), "{db}: auditor C reads A");
    assert_eq!(
        sqlstate(tx.batch_execute(&format!("INSERT INTO public.items (id, organization_id) VALUES (902, '{ORG_A}')"))),
        "42501",
        "{db}: the custom role's can_write = false came back"
    );
    drop(tx);

    // The invitation made before the dump is accepted in the restored database (its token hash came back).
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_D}'")).unwrap();
    assert_eq!(visible(&mut tx, "public.items", "organization_id"), vec![], "{db}: D is nobody yet");
    tx.query_one("SELECT tenancy.accept_invitation($1)", &[&invitation_token])
        .unwrap_or_else(|e| panic!("{db}: accept the pre-dump invitation: {}", err_text(&e)));
    assert_eq!(visible(&mut tx, "public.items", "organization_id"), ids_of(&ITEMS, ORG_B), "{db}: D joined B");
    tx.rollback().unwrap();
}

/// What, in the restored database `db`, differs from the source in who owns and administers the
/// catalog. Empty when the restore kept it.
fn ownership_problems(db: &str, source: &Rows) -> Vec<String> {
    let owner = format!("{DUMP_DB}_owner");
    let mut su = connect("postgres", db);
    let mut problems = Vec::new();
    let restored = catalog_ownership(&mut su);
    if &restored != source {
        // Summarize: which objects changed owner, from whom to whom.
        let owners = |rows: &Rows| -> BTreeMap<String, String> {
            rows.iter().map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap())).collect()
        };
        let (was, now) = (owners(source), owners(&restored));
        let mut moved: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for (obj, o) in &was {
            let n = now.get(obj).cloned().unwrap_or_else(|| "(missing)".into());
            if &n != o {
                moved.entry((o.clone(), n)).or_default().push(obj.replace("(jsonb,oid,boolean,uuid)", ""));
            }
        }
        for ((from, to), objs) in moved {
            problems.push(format!(
                "{db}: {} objects owned by {from} in the source are owned by {to}: {}",
                objs.len(),
                objs.join(", ")
            ));
        }
        if problems.is_empty() {
            problems
                .push(format!("{db}: catalog privileges differ (- source, + restored):{}", diff(source, &restored)));
        }
    }
    let unreadable = text_rows(
        &mut su,
        &format!(
            "SELECT relname FROM pg_class WHERE relnamespace = 'tenancy'::regnamespace AND relkind = 'r'
               AND NOT has_table_privilege('{owner}', oid, 'SELECT') ORDER BY 1"
        ),
    );
    if !unreadable.is_empty() {
        problems.push(format!("{db}: the installing owner {owner} can no longer read {unreadable:?}"));
    }
    // The management functions switch to the catalog owner: who is that now?
    let mut c = connect(&owner, db);
    c.batch_execute("SELECT tenancy.create_organization('Org R', 'org-r')")
        .unwrap_or_else(|e| panic!("{db}: the owner administers tenants after the restore: {}", err_text(&e)));
    let actor = text_rows(
        &mut su,
        "SELECT actor::text, (SELECT rolsuper FROM pg_roles WHERE rolname = actor)::text
           FROM tenancy.migration_log WHERE operation = 'create_organization' ORDER BY id DESC LIMIT 1",
    );
    if actor != vec![vec![Some(owner.clone()), Some("false".into())]] {
        problems.push(format!(
            "{db}: create_organization called by {owner} ran its privileged part as {actor:?} (actor, superuser), \
             not as {owner}"
        ));
    }
    problems
}

#[test]
fn dump_and_restore_brings_back_tenants_and_isolation() {
    let started = Instant::now();
    let owner = format!("{DUMP_DB}_owner");
    let mut c = two_tenant_db(DUMP_DB);
    c.batch_execute(&format!(
        "INSERT INTO tenancy.roles (name, rank, can_read, can_write, can_delete, description)
              VALUES ('estate_auditor', 15, true, false, false, 'reads only; added by the DBA');
         SELECT tenancy.add_member('{ORG_A}', '{USER_C}', 'estate_auditor');
         INSERT INTO tenancy.lint_ignores (code, object, reason) VALUES ('TEN013', '*', 'estate: reviewed');"
    ))
    .unwrap();
    isolated_items_and_parts(&mut c);
    let token: String = c
        .query_one(
            &format!("SELECT tenancy.create_invitation('{ORG_B}', 'new@example.com', 'member', interval '7 days')"),
            &[],
        )
        .unwrap()
        .get(0);

    let mut su_src = connect("postgres", DUMP_DB);
    let source = dump_snapshot(&mut su_src);
    let source_ownership = catalog_ownership(&mut su_src);
    // The source is what we claim it is: a converted, isolated, non-empty database.
    let get = |snap: &[(&str, Rows)], name: &str| snap.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    assert_eq!(get(&source, "tenancy.organizations").len(), 2);
    assert_eq!(get(&source, "tenancy.memberships").len(), 3);
    assert_eq!(get(&source, "tenancy.invitations").len(), 1);
    assert_eq!(get(&source, "tenancy.tenant_tables").len(), 2);
    // 8 per table, and the operator policy of the context-mode table (parts).
    assert_eq!(get(&source, "pg_policies").len(), 17);
    assert_eq!(get(&source, "public.items").len(), ITEMS.len());
    assert!(
        get(&source, "validate_client_data_integrity()").iter().all(|r| r[13].as_deref() == Some("t")), // ok
        "the source is safely multi-tenant: {:?}",
        get(&source, "validate_client_data_integrity()")
    );
    assert!(source_ownership
        .iter()
        .any(|r| r[0].as_deref() == Some("table organizations") && r[1].as_deref() == Some(owner.as_str())));

    let dir = std::env::temp_dir().join(format!("estate-dump-{}", port()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("estate_dump.pgdump");
    run(pg_tool("pg_dump").args(["-d", DUMP_DB, "-Fc", "-f"]).arg(&file));

    // Two restores into fresh databases owned by the same owner: the usual one, as the superuser;
    // and one where pg_restore acts as the owner (--role), as a non-superuser install would.
    let restores = [(format!("{DUMP_DB}_su"), None), (format!("{DUMP_DB}_as_owner"), Some(owner.clone()))];
    let mut problems = Vec::new();
    for (db, as_role) in &restores {
        let mut su = superuser();
        su.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")).unwrap();
        su.batch_execute(&format!("CREATE DATABASE \"{db}\" OWNER \"{owner}\" TEMPLATE template0")).unwrap();
        let mut restore = pg_tool("pg_restore");
        restore.args(["-d", db, "--exit-on-error", "--single-transaction"]);
        if let Some(r) = as_role {
            // --no-owner: the dump gives schema tenancy to the superuser that ran the install
            // script (0.3.0), which a non-superuser cannot do; CREATE EXTENSION takes it over.
            restore.arg(format!("--role={r}")).arg("--no-owner");
        }
        run(restore.arg(&file));

        let mut su = connect("postgres", db);
        let restored = dump_snapshot(&mut su);
        for ((name, want), (_, got)) in source.iter().zip(&restored) {
            assert_eq!(got, want, "{db}: {name} differs after the restore (- source, + restored):{}", diff(want, got));
        }
        check_isolation(db, &token);
        if as_role.is_some() {
            // The documented restore of a database whose owner installed tenancy: everything,
            // ownership included, is as in the source.
            problems.extend(ownership_problems(db, &source_ownership));
        } else {
            // Restored by a superuser, the extension script runs as that superuser and hands it
            // the catalog, exactly as when a DBA installs tenancy (README: Dump and restore).
            let catalog_owner: String = su
                .query_one(
                    "SELECT relowner::regrole::text FROM pg_class WHERE oid = 'tenancy.organizations'::regclass",
                    &[],
                )
                .unwrap()
                .get(0);
            assert_eq!(
                catalog_owner, "postgres",
                "{db}: a superuser restore gives the catalog to the restoring superuser"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("dump_and_restore: {:.1?}", started.elapsed());
    assert!(
        problems.is_empty(),
        "rows, policies and isolation came back, but not who administers tenancy:\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 2. DROP EXTENSION
// ---------------------------------------------------------------------------------------------

#[test]
fn drop_extension_keeps_user_tables_and_says_what_it_removed() {
    let started = Instant::now();
    let db = "estate_drop";
    let mut c = two_tenant_db(db);
    c.batch_execute(
        "CREATE TABLE public.plain (id int PRIMARY KEY, body text);
         GRANT SELECT, INSERT, UPDATE, DELETE ON public.plain TO PUBLIC;
         INSERT INTO public.plain SELECT g, 'plain ' || g FROM generate_series(1, 5) g;",
    )
    .unwrap();
    isolated_items_and_parts(&mut c);

    let checksums = |su: &mut Client| -> Rows {
        text_rows(
            su,
            "SELECT 'items', count(*), md5(string_agg(t::text, '|' ORDER BY id)) FROM public.items t
             UNION ALL SELECT 'parts', count(*), md5(string_agg(t::text, '|' ORDER BY id)) FROM public.parts t
             UNION ALL SELECT 'plain', count(*), md5(string_agg(t::text, '|' ORDER BY id)) FROM public.plain t",
        )
    };
    let mut su = connect("postgres", db);
    let before = checksums(&mut su);
    assert_eq!(before.iter().map(|r| r[1].clone().unwrap()).collect::<Vec<_>>(), ["7", "5", "5"]);

    // Isolation is in force before the drop: the app role sees A's rows with A's context.
    let mut app = app_session(db);
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
    assert_eq!(count(&mut tx, "SELECT count(*) FROM public.items"), 3);
    drop(tx);

    // What depends on tenancy: per table its FK to tenancy.organizations, its DEFAULT and 8 policies,
    // and the operator policy of the context-mode table.
    let mut expected = BTreeSet::from(["policy tenancy_operator on table parts".to_string()]);
    for (t, col) in [("items", "organization_id"), ("parts", "tenant_id")] {
        expected.insert(format!("constraint {t}_{col}_fkey on table {t}"));
        expected.insert(format!("default value for column {col} of table {t}"));
        for cmd in ["select", "insert", "update", "delete"] {
            for kind in ["boundary", "access"] {
                expected.insert(format!("policy tenancy_{cmd}_{kind} on table {t}"));
            }
        }
    }

    // Not the owner of the extension: refused.
    assert_eq!(sqlstate(app.batch_execute("DROP EXTENSION tenancy")), "42501");

    // Without CASCADE: refused, naming every dependent object; nothing changes.
    let err = c.batch_execute("DROP EXTENSION tenancy").expect_err("DROP EXTENSION without CASCADE must be refused");
    let dberr = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(dberr.code().code(), "2BP01", "{}", err_text(&err));
    let detail = dberr.detail().unwrap_or_default();
    let named: BTreeSet<String> = detail.lines().map(|l| l.split(" depends on ").next().unwrap().to_string()).collect();
    assert_eq!(named, expected, "the error's DETAIL names exactly the dependent objects:\n{detail}");
    assert_eq!(count(&mut su, "SELECT count(*) FROM pg_extension WHERE extname = 'tenancy'"), 1);
    assert_eq!(count(&mut su, "SELECT count(*) FROM pg_policies WHERE schemaname = 'public'"), 17);

    // With CASCADE: done, and the NOTICE lists what went with it.
    let (mut owner, notices) = connect_with_notices(&format!("{db}_owner"), db);
    owner.batch_execute("DROP EXTENSION tenancy CASCADE").unwrap_or_else(|e| panic!("{}", err_text(&e)));
    let notices = notices.lock().unwrap().clone();
    let cascade: Vec<&DbError> = notices.iter().filter(|n| n.message().starts_with("drop cascades to")).collect();
    assert_eq!(cascade.len(), 1, "one cascade NOTICE: {notices:?}");
    assert_eq!(cascade[0].message(), format!("drop cascades to {} other objects", expected.len()));
    let removed: BTreeSet<String> = cascade[0]
        .detail()
        .unwrap_or_default()
        .lines()
        .map(|l| l.strip_prefix("drop cascades to ").unwrap_or(l).to_string())
        .collect();
    assert_eq!(removed, expected, "the NOTICE lists what was removed");
    let kinds: BTreeSet<&str> = removed.iter().map(|r| r.split(' ').next().unwrap()).collect();
    assert_eq!(kinds, BTreeSet::from(["constraint", "default", "policy"]));

    // The extension and its catalog are gone; the schema it was created with stays, empty.
    assert_eq!(count(&mut su, "SELECT count(*) FROM pg_extension WHERE extname = 'tenancy'"), 0);
    assert_eq!(
        count(
            &mut su,
            "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'tenancy'::regnamespace)
                  + (SELECT count(*) FROM pg_proc WHERE pronamespace = 'tenancy'::regnamespace)"
        ),
        0
    );

    // Every user table and every row is still there, unchanged.
    assert_eq!(checksums(&mut su), before, "count and checksum of every user table");
    // What was removed from them, per the catalogs: policies, FKs, defaults. What stayed: columns,
    // NOT NULL, indexes, and RLS enabled and forced.
    assert_eq!(
        count(
            &mut su,
            "SELECT count(*) FROM pg_policy WHERE polrelid IN ('public.items'::regclass, 'public.parts'::regclass)"
        ),
        0
    );
    assert_eq!(count(&mut su, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid IN ('public.items'::regclass, 'public.parts'::regclass)"), 0);
    assert_eq!(
        count(
            &mut su,
            "SELECT count(*) FROM pg_attrdef WHERE adrelid IN ('public.items'::regclass, 'public.parts'::regclass)"
        ),
        0
    );
    let kept = text_rows(
        &mut su,
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, a.attnotnull,
                (SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid)
           FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname IN ('organization_id', 'tenant_id')
          WHERE c.oid IN ('public.items'::regclass, 'public.parts'::regclass) ORDER BY 1",
    );
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        kept,
        vec![vec![s("items"), s("t"), s("t"), s("t"), s("2")], vec![s("parts"), s("t"), s("t"), s("t"), s("2")]],
        "(table, RLS enabled, forced, tenant column NOT NULL, indexes)"
    );

    // RLS on and no policy: fails closed. The app role, even claiming a user, sees nothing and
    // writes nothing; so does the table owner (FORCE); only the superuser sees the rows.
    let mut app = app_session(db);
    let mut tx = app.transaction().unwrap();
    assert_eq!(sqlstate(tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'"))), "ok");
    assert_eq!(count(&mut tx, "SELECT count(*) FROM public.items"), 0, "app role: no rows once the policies are gone");
    assert_eq!(count(&mut tx, "SELECT count(*) FROM public.parts"), 0);
    assert_eq!(tx.execute("UPDATE public.items SET body = 'x'", &[]).unwrap(), 0);
    assert_eq!(tx.execute("DELETE FROM public.parts", &[]).unwrap(), 0);
    assert_eq!(
        sqlstate(tx.batch_execute(&format!("INSERT INTO public.items VALUES (99, '{ORG_A}', 'x')"))),
        "42501",
        "no INSERT policy: refused"
    );
    drop(tx);
    assert_eq!(count(&mut app, "SELECT count(*) FROM public.plain"), 5, "tables tenancy never touched are unaffected");
    assert_eq!(count(&mut owner, "SELECT count(*) FROM public.items"), 0, "the table owner: FORCE still applies");
    assert_eq!(count(&mut su, "SELECT count(*) FROM public.items"), 7);
    assert_eq!(checksums(&mut su), before, "and nothing the app role tried changed a row");
    eprintln!("drop_extension: {:.1?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 3. pgbouncer, transaction pooling
// ---------------------------------------------------------------------------------------------

/// A pgbouncer process of our own; killed when dropped (also when the test panics).
struct Pgbouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("pgbouncer log kept in {}", self.dir.display());
        }
    }
}

/// uid and gid of `user` from /etc/passwd.
fn passwd_ids(user: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let f: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == user)
        .unwrap_or_else(|| panic!("no user {user}"));
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

fn start_pgbouncer(db: &str, users: &[&str], pool_size: u32) -> Pgbouncer {
    // TENANCY_PGBOUNCER_PORT, else the test cluster's port + 100 (two checkouts testing at once set it).
    let bport = std::env::var("TENANCY_PGBOUNCER_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(port() + 100);
    let dir = std::env::temp_dir().join(format!("estate-pgbouncer-{bport}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let userlist: String = users.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
    std::fs::write(dir.join("userlist.txt"), userlist).unwrap();
    let ini = format!(
        "[databases]
{db} = host=127.0.0.1 port={pg} dbname={db}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {bport}
unix_socket_dir =
auth_type = trust
auth_file = {dir}/userlist.txt
admin_users = {admin}
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 100
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
logfile = {dir}/pgbouncer.log
",
        pg = port(),
        dir = dir.display(),
        admin = users[0],
    );
    let ini_path = dir.join("pgbouncer.ini");
    std::fs::write(&ini_path, ini).unwrap();

    let mut cmd = Command::new("/usr/sbin/pgbouncer");
    cmd.arg(&ini_path).stdin(Stdio::null()).stdout(Stdio::null());
    cmd.stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
    // pgbouncer refuses to run as root: as root, run it as postgres (like the clusters).
    if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        let (uid, gid) = passwd_ids("postgres");
        for entry in std::fs::read_dir(&dir).unwrap() {
            std::os::unix::fs::chown(entry.unwrap().path(), Some(uid), Some(gid)).unwrap();
        }
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        cmd.uid(uid).gid(gid);
    }
    let child = cmd.spawn().expect("start /usr/sbin/pgbouncer");
    let mut pgb = Pgbouncer { child, dir, port: bport };

    // Ready when it accepts a connection; give up (with its log) if it exits or takes over 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = pgb.child.try_wait().unwrap() {
            panic!("pgbouncer exited ({status}):\n{}", read_logs(&pgb.dir));
        }
        if std::net::TcpStream::connect(("127.0.0.1", bport)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "pgbouncer did not listen on {bport}:\n{}", read_logs(&pgb.dir));
        std::thread::sleep(Duration::from_millis(20));
    }
    pgb
}

fn read_logs(dir: &Path) -> String {
    ["stderr.log", "pgbouncer.log"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// xorshift64*: enough randomness to pick organizations, without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

#[derive(Default)]
struct PoolStats {
    transactions: usize,
    checks: usize,
    leaks: Vec<String>,
    /// transactions that began on a server connection still holding session-level tenancy settings
    /// (written on purpose by misbehaving transactions, this client's or another's)
    stale_starts: usize,
    pids: BTreeSet<String>,
}

#[test]
fn pgbouncer_transaction_pooling_never_leaks_context() {
    let started = Instant::now();
    const CLIENTS: usize = 12;
    const TRANSACTIONS: usize = 200;
    const POOL: u32 = 3;
    let db = "estate_pool";
    let (owner_role, app_role) = (format!("{db}_owner"), format!("{db}_app"));
    let mut c = two_tenant_db(db);
    // Four organizations with different numbers of rows (so a mix-up shows in the count too), an
    // owner each, and one user M who is a member of all four.
    let orgs: [(&str, &str, usize); 4] = [
        (ORG_A, USER_A, 10),
        (ORG_B, USER_B, 20),
        ("00000000-0000-0000-0000-00000000000c", USER_C, 30),
        ("00000000-0000-0000-0000-00000000000d", USER_D, 40),
    ];
    const USER_M: &str = "eeeeeeee-0000-0000-0000-000000000005";
    c.batch_execute(&format!(
        "SELECT tenancy.create_organization('Org C', 'org-c', '{}', '{{}}', '{USER_C}');
         SELECT tenancy.create_organization('Org D', 'org-d', '{}', '{{}}', '{USER_D}');
         CREATE TABLE public.ledger (id serial PRIMARY KEY, organization_id uuid NOT NULL REFERENCES tenancy.organizations,
                                     body text);
         CREATE INDEX ON public.ledger (organization_id, id);
         GRANT SELECT ON public.ledger TO PUBLIC;",
        orgs[2].0, orgs[3].0
    ))
    .unwrap();
    for (org, _, n) in orgs {
        c.batch_execute(&format!(
            "SELECT tenancy.add_member('{org}', '{USER_M}', 'member');
             INSERT INTO public.ledger (organization_id, body) SELECT '{org}', 'row ' || g FROM generate_series(1, {n}) g;"
        ))
        .unwrap();
    }
    // Membership mode: if the organization chosen in a transaction were lost or mixed up, M
    // would see several organizations' rows.
    c.batch_execute("SELECT tenancy.enable_isolation('public.ledger')").unwrap();

    let pgb = start_pgbouncer(db, &[&owner_role, &app_role], POOL);
    let conn = format!("host=127.0.0.1 port={} user={owner_role} dbname={db}", pgb.port);

    let stats: Vec<PoolStats> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (conn, owner_role, app_role) = (&conn, &owner_role, &app_role);
                s.spawn(move || {
                    let mut c = Client::connect(conn, NoTls).unwrap_or_else(|e| panic!("client {client}: {e}"));
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (client as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03) ^ uuid::Uuid::new_v4().as_u128() as u64);
                    let mut st = PoolStats::default();
                    for t in 0..TRANSACTIONS {
                        let (org, org_owner, n) = orgs[rng.next(orgs.len())];
                        let user = if rng.next(2) == 0 { org_owner } else { USER_M };
                        let mut leak = |what: String| st.leaks.push(format!("client {client} tx {t}: {what}"));

                        // Before anything is set: the role is the login role, and there is no context,
                        // whatever the previous user of this server connection left behind.
                        let r = text_rows(
                            &mut c,
                            "BEGIN; SELECT current_user::text, pg_backend_pid()::text,
                                    tenancy.current_user_id()::text, tenancy.current_organization_id()::text,
                                    (SELECT count(*) FROM public.ledger)::text,
                                    nullif(current_setting('tenancy.user_id', true), '')",
                        );
                        let pid = r[0][1].clone().unwrap();
                        st.pids.insert(pid.clone());
                        if r[0][5].is_some() {
                            st.stale_starts += 1;
                        }
                        let got = (r[0][0].as_deref(), r[0][2].as_deref(), r[0][3].as_deref(), r[0][4].as_deref());
                        st.checks += 1;
                        if got != (Some(owner_role.as_str()), None, None, Some("0")) {
                            leak(format!("at BEGIN (role, user, organization, visible rows) = {got:?}"));
                        }
                        let r = text_rows(
                            &mut c,
                            &format!(
                                "SET LOCAL ROLE {app_role};
                                 SELECT current_user::text, tenancy.current_user_id()::text,
                                        tenancy.current_organization_id()::text, (SELECT count(*) FROM public.ledger)::text"
                            ),
                        );
                        let got = (r[0][0].as_deref(), r[0][1].as_deref(), r[0][2].as_deref(), r[0][3].as_deref());
                        st.checks += 1;
                        if got != (Some(app_role.as_str()), None, None, Some("0")) {
                            leak(format!("as the app role before any context: {got:?}"));
                        }

                        // This transaction's context: tenancy.user_id + set_organization, or the
                        // JWT claims PostgREST would write; both transaction-local.
                        if rng.next(3) == 0 {
                            c.batch_execute(&format!(
                                "SELECT set_config('request.jwt.claims', '{{\"sub\":\"{user}\",\"organization_id\":\"{org}\"}}', true)"
                            ))
                            .unwrap();
                        } else {
                            let r = text_rows(
                                &mut c,
                                &format!("SET LOCAL tenancy.user_id = '{user}'; SELECT tenancy.set_organization('{org}')::text"),
                            );
                            assert_eq!(r[0][0].as_deref(), Some(org));
                        }
                        let r = text_rows(
                            &mut c,
                            "SELECT organization_id::text, count(*)::text, tenancy.current_organization_id()::text,
                                    pg_backend_pid()::text
                               FROM public.ledger GROUP BY 1",
                        );
                        let want = vec![vec![Some(org.to_string()), Some(n.to_string()), Some(org.to_string()), Some(pid)]];
                        st.checks += 1;
                        if r != want {
                            leak(format!("with organization {org} as user {user}: saw {r:?}"));
                        }

                        // One transaction in four misbehaves: session-level settings that outlive
                        // it on the pooled server connection, naming another organization.
                        if rng.next(4) == 0 {
                            let (other, other_owner, _) = orgs[rng.next(orgs.len())];
                            c.batch_execute(&format!(
                                "SELECT set_config('tenancy.user_id', '{other_owner}', false),
                                        set_config('tenancy.organization_id', '{other}', false),
                                        set_config('request.jwt.claims', '{{\"sub\":\"{other_owner}\",\"organization_id\":\"{other}\"}}', false)"
                            ))
                            .unwrap();
                        }
                        c.batch_execute(if rng.next(10) == 0 { "ROLLBACK" } else { "COMMIT" }).unwrap();
                        st.transactions += 1;
                    }
                    st
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a client thread panicked")).collect()
    });

    let total = |f: fn(&PoolStats) -> usize| stats.iter().map(f).sum::<usize>();
    let leaks: Vec<&String> = stats.iter().flat_map(|s| &s.leaks).collect();
    let mut clients_per_pid: BTreeMap<&String, usize> = BTreeMap::new();
    for s in &stats {
        for p in &s.pids {
            *clients_per_pid.entry(p).or_default() += 1;
        }
    }
    let (transactions, checks, stale) = (total(|s| s.transactions), total(|s| s.checks), total(|s| s.stale_starts));
    eprintln!(
        "pgbouncer: {CLIENTS} clients x {TRANSACTIONS} transactions = {transactions}, {checks} checks, {} leaks; \
         {} server connections (clients per backend pid: {clients_per_pid:?}); {stale} transactions began on a server \
         connection holding stale session-level tenancy settings; {:.1?}",
        leaks.len(),
        clients_per_pid.len(),
        started.elapsed()
    );
    assert_eq!(transactions, CLIENTS * TRANSACTIONS);
    assert_eq!(checks, 3 * CLIENTS * TRANSACTIONS);
    assert!(leaks.is_empty(), "{} leaks, first ones:\n{:#?}", leaks.len(), &leaks[..leaks.len().min(10)]);
    // The pooler really shared server connections between clients...
    assert!(clients_per_pid.len() <= POOL as usize, "at most {POOL} server connections: {clients_per_pid:?}");
    assert!(clients_per_pid.values().any(|&n| n > 1), "a server connection served several clients");
    // ...and the hostile case really happened: transactions began on a connection carrying
    // another client's session-level tenancy settings, and were not fooled by them.
    assert!(stale > 0, "no transaction began with stale session settings: the test proved nothing about them");
    drop(pgb);
}

// ---------------------------------------------------------------------------------------------
// 4. Supabase-style managed install, PostgREST requests
// ---------------------------------------------------------------------------------------------

// Supabase's API roles, prefixed for this shared test cluster.
const ANON: &str = "estate_anon";
const AUTHENTICATED: &str = "estate_authenticated";
const SERVICE_ROLE: &str = "estate_service_role";
const AUTHENTICATOR: &str = "estate_authenticator";

/// One PostgREST request: BEGIN; SET LOCAL ROLE; the claims; the query; COMMIT.
fn request<T>(
    c: &mut Client,
    role: &str,
    claims: Option<&str>,
    query: impl FnOnce(&mut postgres::Transaction) -> Result<T, postgres::Error>,
) -> Result<T, postgres::Error> {
    let mut tx = c.transaction()?;
    tx.batch_execute(&format!("SET LOCAL ROLE {role}"))?;
    if let Some(claims) = claims {
        tx.query_one("SELECT set_config('request.jwt.claims', $1, true)", &[&claims])?;
    }
    let out = query(&mut tx)?;
    tx.commit()?;
    Ok(out)
}

fn claims(user: &str, role: &str) -> String {
    format!(r#"{{"sub":"{user}","role":"{role}","aud":"authenticated"}}"#)
}

/// The notes a request reads: (id, organization, author).
fn notes(tx: &mut postgres::Transaction) -> Result<Vec<(i64, String, Option<String>)>, postgres::Error> {
    Ok(tx
        .query("SELECT id, organization_id::text, author::text FROM public.notes ORDER BY id", &[])?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

#[test]
fn supabase_style_managed_install_isolates_postgrest_requests() {
    let started = Instant::now();
    let db = "estate_supa";
    let owner = format!("{db}_owner");
    superuser()
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {ANON} NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
             DO $$ BEGIN CREATE ROLE {AUTHENTICATED} NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
             DO $$ BEGIN CREATE ROLE {SERVICE_ROLE} NOLOGIN BYPASSRLS; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
             DO $$ BEGIN CREATE ROLE {AUTHENTICATOR} LOGIN NOINHERIT; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
             ALTER ROLE {SERVICE_ROLE} NOLOGIN BYPASSRLS;
             ALTER ROLE {AUTHENTICATOR} LOGIN NOINHERIT;
             GRANT {ANON}, {AUTHENTICATED}, {SERVICE_ROLE} TO {AUTHENTICATOR};"
        ))
        .unwrap();
    // The database owner, not a superuser, installs tenancy (as on a managed service).
    let mut c = fresh_db(db, &owner);
    let su: bool = c.query_one("SELECT rolsuper FROM pg_roles WHERE rolname = current_user", &[]).unwrap().get(0);
    assert!(!su, "the installer must not be a superuser for this test to mean anything");
    c.batch_execute(&format!(
        "CREATE SCHEMA auth;
         GRANT USAGE ON SCHEMA auth TO {ANON}, {AUTHENTICATED}, {SERVICE_ROLE};
         -- auth.uid() as Supabase defines it.
         CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
           SELECT coalesce(
             nullif(current_setting('request.jwt.claim.sub', true), ''),
             (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
           )::uuid
         $$;
         SELECT tenancy.create_organization('Org A', 'org-a', '{ORG_A}', '{{}}', '{USER_A}');
         SELECT tenancy.create_organization('Org B', 'org-b', '{ORG_B}', '{{}}', '{USER_B}');
         CREATE TABLE public.notes (
             id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
             organization_id uuid NOT NULL REFERENCES tenancy.organizations,
             author uuid DEFAULT auth.uid(),
             body text);
         CREATE INDEX ON public.notes (organization_id, id);
         -- Supabase's default privileges: the API roles get every table.
         GRANT ALL ON public.notes TO {ANON}, {AUTHENTICATED}, {SERVICE_ROLE};
         INSERT INTO public.notes (organization_id, author, body) VALUES
             ('{ORG_A}', '{USER_A}', 'a1'), ('{ORG_A}', '{USER_A}', 'a2'),
             ('{ORG_B}', '{USER_B}', 'b1'), ('{ORG_B}', '{USER_B}', 'b2'), ('{ORG_B}', '{USER_B}', 'b3');
         SELECT tenancy.enable_isolation('public.notes', roles => '{{{AUTHENTICATED}}}');"
    ))
    .unwrap();

    let mut api = connect(AUTHENTICATOR, db);
    let (claims_a, claims_b) = (claims(USER_A, AUTHENTICATED), claims(USER_B, AUTHENTICATED));
    let all = |api: &mut Client| request(api, SERVICE_ROLE, None, notes).unwrap();
    let of = |rows: &[(i64, String, Option<String>)], org: &str| -> Vec<(i64, String, Option<String>)> {
        rows.iter().filter(|r| r.1 == org).cloned().collect()
    };

    // service_role (BYPASSRLS) sees everything, with or without claims.
    let everything = all(&mut api);
    assert_eq!(everything.len(), 5);
    assert_eq!(request(&mut api, SERVICE_ROLE, Some(&claims_a), notes).unwrap(), everything);

    // The authenticator itself (NOINHERIT) has no rights of the roles it may become.
    assert_eq!(sqlstate(api.query("SELECT * FROM public.notes", &[])), "42501");

    // A and B, each only their own organization; auth.uid() and tenancy agree on who is asking.
    for (claims, user, org) in [(&claims_a, USER_A, ORG_A), (&claims_b, USER_B, ORG_B)] {
        let (rows, who) = request(&mut api, AUTHENTICATED, Some(claims), |tx| {
            let rows = notes(tx)?;
            let r = tx.query_one(
                "SELECT auth.uid()::text, tenancy.current_user_id()::text, tenancy.current_organization_id()::text",
                &[],
            )?;
            Ok((rows, (r.get::<_, Option<String>>(0), r.get::<_, Option<String>>(1), r.get::<_, Option<String>>(2))))
        })
        .unwrap();
        assert_eq!(rows, of(&everything, org), "user {user} sees exactly the rows of {org}");
        assert_eq!(who, (Some(user.to_string()), Some(user.to_string()), Some(org.to_string())));
    }
    // Older PostgREST: the subject in request.jwt.claim.sub.
    let rows = request(&mut api, AUTHENTICATED, None, |tx| {
        tx.query_one("SELECT set_config('request.jwt.claim.sub', $1, true)", &[&USER_B])?;
        notes(tx)
    })
    .unwrap();
    assert_eq!(rows, of(&everything, ORG_B), "request.jwt.claim.sub alone identifies B");

    // anon: no rows, no writes, even carrying a user's claims.
    assert_eq!(request(&mut api, ANON, None, notes).unwrap(), vec![], "anon sees nothing");
    assert_eq!(request(&mut api, ANON, Some(&claims(USER_A, ANON)), notes).unwrap(), vec![], "anon with A's sub");
    assert_eq!(
        sqlstate(request(&mut api, ANON, None, |tx| tx
            .execute(&format!("INSERT INTO public.notes (organization_id, body) VALUES ('{ORG_A}', 'anon')"), &[]))),
        "42501"
    );
    assert_eq!(
        request(&mut api, ANON, None, |tx| tx.execute("UPDATE public.notes SET body = 'anon'", &[])).unwrap(),
        0
    );
    assert_eq!(request(&mut api, ANON, None, |tx| tx.execute("DELETE FROM public.notes", &[])).unwrap(), 0);

    // authenticated without claims, or with garbage: nothing.
    assert_eq!(request(&mut api, AUTHENTICATED, None, notes).unwrap(), vec![], "no claims, no rows");
    assert_eq!(request(&mut api, AUTHENTICATED, Some("{}"), notes).unwrap(), vec![], "claims without sub");
    assert_eq!(
        request(&mut api, AUTHENTICATED, Some(r#"{"sub":"not-a-uuid","role":"authenticated"}"#), notes).unwrap(),
        vec![]
    );
    // A claiming B's organization in the JWT: not a member, so no organization at all.
    let forged = format!(r#"{{"sub":"{USER_A}","role":"{AUTHENTICATED}","organization_id":"{ORG_B}"}}"#);
    assert_eq!(request(&mut api, AUTHENTICATED, Some(&forged), notes).unwrap(), vec![], "A naming B's organization");

    // A cannot touch B's rows: reads and deletes/updates filter them out (0 rows), inserts and
    // moves into B are refused by WITH CHECK (42501).
    let b_before = of(&everything, ORG_B);
    let b_bodies = |api: &mut Client| -> Vec<(i64, String, Option<String>)> {
        request(api, SERVICE_ROLE, None, |tx| {
            Ok(tx
                .query(
                    &format!(
                        "SELECT id, body, author::text FROM public.notes WHERE organization_id = '{ORG_B}' ORDER BY id"
                    ),
                    &[],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })
        .unwrap()
    };
    let b_state = b_bodies(&mut api);
    let affected =
        |api: &mut Client, sql: String| request(api, AUTHENTICATED, Some(&claims_a), |tx| tx.execute(&sql, &[]));
    assert_eq!(
        affected(&mut api, format!("UPDATE public.notes SET body = 'by A' WHERE organization_id = '{ORG_B}'")).unwrap(),
        0
    );
    assert_eq!(affected(&mut api, format!("DELETE FROM public.notes WHERE organization_id = '{ORG_B}'")).unwrap(), 0);
    assert_eq!(
        affected(&mut api, format!("UPDATE public.notes SET body = 'by A' WHERE id = {}", b_before[0].0)).unwrap(),
        0
    );
    assert_eq!(
        sqlstate(affected(
            &mut api,
            format!("INSERT INTO public.notes (organization_id, body) VALUES ('{ORG_B}', 'by A')")
        )),
        "42501",
        "A inserting into B"
    );
    assert_eq!(
        sqlstate(affected(
            &mut api,
            format!("UPDATE public.notes SET organization_id = '{ORG_B}' WHERE organization_id = '{ORG_A}'")
        )),
        "42501",
        "A moving its rows into B"
    );
    assert_eq!(
        sqlstate(affected(
            &mut api,
            format!(
                "INSERT INTO public.notes (id, organization_id, body) VALUES ({}, '{ORG_A}', 'x')
             ON CONFLICT (id) DO UPDATE SET body = 'by A'",
                b_before[0].0
            )
        )),
        "42501",
        "A upserting over B's row"
    );
    assert_eq!(b_bodies(&mut api), b_state, "B's rows are exactly as before");

    // A writes its own organization: the tenant column and the author come from the context.
    let (id, org, author): (i64, String, Option<String>) = request(&mut api, AUTHENTICATED, Some(&claims_a), |tx| {
        let r = tx.query_one(
            "INSERT INTO public.notes (body) VALUES ('a3') RETURNING id, organization_id::text, author::text",
            &[],
        )?;
        Ok((r.get(0), r.get(1), r.get(2)))
    })
    .unwrap();
    assert_eq!((org.as_str(), author.as_deref()), (ORG_A, Some(USER_A)));
    assert_eq!(affected(&mut api, format!("UPDATE public.notes SET body = 'a3!' WHERE id = {id}")).unwrap(), 1);
    // B does not see it; service_role does.
    let b_rows = request(&mut api, AUTHENTICATED, Some(&claims_b), notes).unwrap();
    assert!(b_rows.iter().all(|r| r.1 == ORG_B) && !b_rows.iter().any(|r| r.0 == id));
    assert_eq!(all(&mut api).len(), 6, "service_role sees all rows, A's new one included");
    // Each request's context ends with it: the same connection, next request without claims.
    assert_eq!(request(&mut api, AUTHENTICATED, None, notes).unwrap(), vec![]);
    eprintln!("supabase: {:.1?}", started.elapsed());
}
