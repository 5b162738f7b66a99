//! The tenant lifecycle on seed 000's conversion (examples/seed_000_tracehub.sql run with psql):
//! VIBOTAJ exported to a file with psql's \copy and imported into another database (equal by
//! fingerprint, isolated there); VIBOTAJ cloned in place (new keys, every reference mapped); the
//! clone erased while a writer works in another organization, killed once mid-way
//! (pg_terminate_backend) and finished by a second CALL; bad input with
//! its SQLSTATE and nothing changed; and attacks by members, viewers, owners of another
//! organization and a table owner who is not an administrator, each of which must fail.
//!
//! The tables are handed to `lc_tables` (not a superuser, not a tenancy administrator), so that
//! erase and import run as that owner, under forced row-level security.
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tenancy_client_tests::*;

const VIBOTAJ: &str = "00000000-0000-0000-0000-000000000001";
const ACME: &str = "00000000-0000-0000-0000-0000000000a2";
const CLONE: &str = "00000000-0000-0000-0000-0000000000c1";
const WRITER_ORG: &str = "00000000-0000-0000-0000-0000000000a3";
const WRITER_USER: &str = "cccccccc-0000-0000-0000-000000000003";
/// Seed 000's adopted users: user 5 is a viewer of VIBOTAJ, user 3 a member, user 6 an owner.
const VIBOTAJ_VIEWER: &str = "11111111-0000-0000-0000-000000000005";
const VIBOTAJ_MEMBER: &str = "11111111-0000-0000-0000-000000000003";
const VIBOTAJ_OWNER: &str = "11111111-0000-0000-0000-000000000006";
const TABLES: [&str; 9] = [
    "users",
    "parties",
    "products",
    "origins",
    "shipments",
    "documents",
    "container_events",
    "notifications",
    "audit_logs",
];

fn psql_bin() -> PathBuf {
    std::env::var("PG_BIN").map(|b| PathBuf::from(b).join("psql")).unwrap_or_else(|_| PathBuf::from("psql"))
}

/// Run psql as the superuser on `db` with `args`; panics with its output on failure.
fn psql(db: &str, args: &[&str]) -> String {
    let out = Command::new(psql_bin())
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port().to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(args)
        .output()
        .expect("psql runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "psql {args:?} on {db} failed:\n{text}");
    text
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn tmp_file(name: &str) -> String {
    let dir = std::env::var("TENANCY_TMP").unwrap_or_else(|_| "/tmp".into());
    format!("{dir}/{name}")
}

/// An empty database `db` (dropped first if it exists), and the superuser's connection to it;
/// the role lc_tables exists.
fn fresh_db(db: &str) -> postgres::Client {
    role("lc_tables", "");
    let mut su = superuser();
    su.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).unwrap();
    su.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    superuser_of(db)
}

/// Seed 000 converted in database `db`, its tables handed to lc_tables, the application role
/// lc_app granted what an application has, and organization ACME (rows in every table, `acme`
/// shipments) and the writer's organization added.
fn seed_db(db: &str, acme: i64) {
    // Both tests start with this, in parallel. role() tolerates the race; the seed creates its
    // owner with IF NOT EXISTS, which two psql sessions on a fresh cluster race on (23505 from
    // pg_authid's index): create it here once, as the seed would, so the seed finds it.
    static ROLES: std::sync::Once = std::sync::Once::new();
    ROLES.call_once(|| {
        role("lc_tables", "");
        role("lc_app", "");
        role("tracehub_owner", "NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB");
    });
    drop(fresh_db(db));
    // The converted, isolated seed 000 (the seed's rollback levels skipped).
    psql(db, &["-v", "keep_converted=1", "-f", repo().join("examples/seed_000_tracehub.sql").to_str().unwrap()]);
    let mut c = superuser_of(db);
    for t in TABLES {
        c.batch_execute(&format!("ALTER TABLE {t} OWNER TO lc_tables")).unwrap();
    }
    c.batch_execute(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO lc_app;
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO lc_app;",
    )
    .unwrap();
    if acme > 0 {
        psql(
            db,
            &[
                "-v",
                &format!("org={ACME}"),
                "-v",
                "slug=acme",
                "-v",
                &format!("n={acme}"),
                "-f",
                repo().join("pgrx-tests/tests/fixtures/lifecycle_org.sql").to_str().unwrap(),
            ],
        );
    }
    c.batch_execute(&format!(
        "SELECT tenancy.create_organization('Writer Ltd', 'writer', id => '{WRITER_ORG}', owner_user_id => '{WRITER_USER}');
         ANALYZE;"
    ))
    .unwrap();
}

/// Count and an order-independent hash of every row of organization `org`, per table (read by
/// the superuser, which row-level security does not filter).
fn fingerprint(c: &mut postgres::Client, org: &str) -> Vec<(String, i64, String)> {
    TABLES
        .iter()
        .map(|t| {
            let r = c
                .query_one(
                    &format!(
                        "SELECT count(*), coalesce(sum(hashtextextended(x::text, 0)::numeric), 0)::text FROM {t} x
                          WHERE organization_id = $1::text::uuid"
                    ),
                    &[&org],
                )
                .unwrap();
            (t.to_string(), r.get(0), r.get(1))
        })
        .collect()
}

fn rows_of(c: &mut postgres::Client, org: &str) -> i64 {
    fingerprint(c, org).iter().map(|f| f.1).sum()
}

fn export_to_file(db: &str, org: &str, file: &str) {
    psql(
        db,
        &["-c", &format!(
            "\\copy (SELECT * FROM tenancy.export_organization('{org}')) TO '{file}' WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')"
        )],
    );
}

fn load_export(db: &str, table: &str, file: &str) {
    psql(
        db,
        &[
            "-c",
            &format!("CREATE TABLE {table} (n bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, line text)"),
            "-c",
            &format!("\\copy {table} (line) FROM '{file}' WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')"),
        ],
    );
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ready() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A session of the application acting as `user` (membership decides what it sees).
fn as_user(db: &str, user: &str, sql: &str) -> Result<Vec<postgres::Row>, postgres::Error> {
    let mut c = connect("postgres", db);
    c.batch_execute("SET ROLE lc_app").unwrap();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{user}'")).unwrap();
    let r = tx.query(sql, &[]);
    if r.is_ok() {
        tx.commit().unwrap();
    }
    r
}

#[test]
fn seed_000_export_import_clone_and_an_online_erase_of_the_clone_killed_once() {
    let (src, dst) = ("lc_seed", "lc_restore");
    seed_db(src, 0);
    let mut su = superuser_of(src);
    let vibotaj_before = fingerprint(&mut su, VIBOTAJ);
    assert_eq!(vibotaj_before.iter().map(|f| f.1).sum::<i64>(), 230_760, "seed 000's rows");

    // 1. Export VIBOTAJ with one psql command; every line is JSON, the header first, then rows
    //    parents first, the end line last with the counts.
    let file = tmp_file("lc_vibotaj.jsonl");
    export_to_file(src, VIBOTAJ, &file);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 230_760 + 2);
    assert!(
        lines[0].starts_with("{\"format\" : \"tenancy-export\"")
            && lines[0].contains("\"tenancy_version\" : \"0.3.0\"")
    );
    assert!(lines[0].contains(&format!("\"id\" : \"{VIBOTAJ}\"")), "the header names the source organization");
    assert!(lines[lines.len() - 1].starts_with("{\"end\" : true"));
    // A row line is [<index into the header's tables>, <values>...].
    let prefix = |c: &mut postgres::Client, table: &str| -> String {
        let r = c
            .query_one(
                "SELECT (x.i - 1)::text FROM jsonb_array_elements_text($1::text::jsonb->'tables') WITH ORDINALITY x(t, i) \
                  WHERE x.t = $2",
                &[&lines[0], &table],
            )
            .unwrap();
        format!("[{},", r.get::<_, String>(0))
    };
    let (shipments, parties, documents) =
        (prefix(&mut su, "public.shipments"), prefix(&mut su, "public.parties"), prefix(&mut su, "public.documents"));
    let first_shipment = lines.iter().position(|l| l.starts_with(&shipments)).unwrap();
    let last_party = lines.iter().rposition(|l| l.starts_with(&parties)).unwrap();
    let first_document = lines.iter().position(|l| l.starts_with(&documents)).unwrap();
    let rows = lines[1..lines.len() - 1].iter().filter(|l| l.starts_with('[') && l.ends_with(']')).count();
    assert_eq!(rows, 230_760, "every row line is a JSON array");
    assert!(last_party < first_shipment && first_shipment < first_document, "parents before children");
    assert!(!text.contains(WRITER_ORG), "no row of another organization");

    // 2. Import it into another database where VIBOTAJ was erased: every row equal, isolated.
    seed_db(dst, 0);
    let mut d = superuser_of(dst);
    d.batch_execute(&format!("SELECT tenancy.deactivate_organization('{VIBOTAJ}')")).unwrap();
    d.batch_execute(&format!("CALL tenancy.erase_organization('{VIBOTAJ}', batch_size => 50000)")).unwrap();
    assert_eq!(rows_of(&mut d, VIBOTAJ), 0);
    // As in a database that never held VIBOTAJ: every id sequence back at its start.
    let sequences =
        "SELECT s.seq, t FROM unnest($1::text[]) t, LATERAL (SELECT pg_get_serial_sequence(t, 'id') AS seq) s \
                      WHERE s.seq IS NOT NULL";
    let tables: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
    let seqs: Vec<(String, String)> =
        d.query(sequences, &[&tables]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(seqs.len(), 8, "seed 000's serial ids");
    for (seq, _) in &seqs {
        d.batch_execute(&format!("SELECT setval('{seq}', 1, false)")).unwrap();
    }
    load_export(dst, "vibotaj_export", &file);
    d.batch_execute("CALL tenancy.import_organization('vibotaj_export', batch_size => 10000)").unwrap();
    assert_eq!(fingerprint(&mut d, VIBOTAJ), vibotaj_before, "every imported row equal to the source's");
    // The ids were kept, and every sequence moved past them: the application's next rows fit.
    for (seq, table) in &seqs {
        let r = d.query_one(&format!("SELECT (SELECT max(id)::bigint FROM {table}), nextval('{seq}')"), &[]).unwrap();
        let (max, next): (i64, i64) = (r.get(0), r.get(1));
        assert!(next > max, "{seq}: next value {next} after the imported ids (max {max})");
    }
    let not_ok: i64 =
        d.query_one("SELECT count(*) FROM tenancy.validate_client_data_integrity() WHERE NOT ok", &[]).unwrap().get(0);
    assert_eq!(not_ok, 0, "the imported organization passes the integrity report");
    let seen = as_user(dst, WRITER_USER, "SELECT count(*) FROM shipments").unwrap()[0].get::<_, i64>(0);
    assert_eq!(seen, 0, "another organization's user sees none of the imported rows");
    let logged: i64 = d
        .query_one("SELECT count(*) FROM tenancy.migration_log WHERE operation = 'import_organization' AND status = 'succeeded'", &[])
        .unwrap()
        .get(0);
    assert_eq!(logged, 1);

    // 3. Clone VIBOTAJ in place. Seed 000 keeps users' email unique across organizations (a
    //    login), so the first CALL stops at users with a clear report, having lost nothing.
    let clone =
        format!("CALL tenancy.clone_organization('{VIBOTAJ}', 'VIBOTAJ sandbox', 'vibotaj-sandbox', '{CLONE}', 5000)");
    let err = su.batch_execute(&clone).unwrap_err();
    let db_err = err.as_db_error().unwrap();
    assert_eq!(db_err.code().code(), "23505");
    assert!(
        db_err.message().contains("public.users") && db_err.message().contains("users_email_key"),
        "{}",
        db_err.message()
    );
    assert_eq!(fingerprint(&mut su, VIBOTAJ), vibotaj_before, "the source unchanged");
    let copied: i64 =
        su.query_one("SELECT count(*) FROM parties WHERE organization_id = $1::text::uuid", &[&CLONE]).unwrap().get(0);
    assert_eq!(copied, 100, "the tables before users stay copied");
    // A sandbox may reuse emails: the DBA makes the key tenant-scoped, and the CALL resumes.
    su.batch_execute("ALTER TABLE users DROP CONSTRAINT users_email_key, ADD UNIQUE (organization_id, email)").unwrap();
    su.batch_execute(&clone).unwrap();
    assert_eq!(fingerprint(&mut su, VIBOTAJ), vibotaj_before, "the source unchanged");
    let counts =
        |c: &mut postgres::Client, org: &str| fingerprint(c, org).into_iter().map(|f| (f.0, f.1)).collect::<Vec<_>>();
    assert_eq!(counts(&mut su, CLONE), counts(&mut su, VIBOTAJ), "same row counts per table");
    // New surrogate keys; every reference of the clone mapped to the clone's copy of the row the
    // source referenced (compared through natural keys: shipment reference, party and product
    // names, user email).
    let same_ids: i64 = su
        .query_one(
            "SELECT (SELECT count(*) FROM shipments a JOIN shipments b ON a.id = b.id WHERE a.organization_id = $1::text::uuid AND b.organization_id = $2::text::uuid)
                  + (SELECT count(*) FROM users a JOIN users b ON a.id = b.id WHERE a.organization_id = $1::text::uuid AND b.organization_id = $2::text::uuid)",
            &[&VIBOTAJ, &CLONE],
        )
        .unwrap()
        .get(0);
    assert_eq!(same_ids, 0, "every surrogate key is new");
    let mismatched: i64 = su
        .query_one(
            "WITH s AS (SELECT x.organization_id o, x.reference, b.name buyer, p.name product, u.email creator,
                               (SELECT count(*) FROM documents d WHERE d.organization_id = x.organization_id AND d.shipment_id = x.id) docs,
                               (SELECT count(*) FROM container_events e WHERE e.organization_id = x.organization_id AND e.shipment_id = x.id) events
                          FROM shipments x
                          LEFT JOIN parties b ON b.organization_id = x.organization_id AND b.id = x.buyer_id
                          LEFT JOIN products p ON p.organization_id = x.organization_id AND p.id = x.product_id
                          LEFT JOIN users u ON u.organization_id = x.organization_id AND u.id = x.created_by)
             SELECT count(*) FROM (SELECT * FROM s WHERE o = $1::text::uuid) a FULL JOIN (SELECT * FROM s WHERE o = $2::text::uuid) b
                 ON a.reference = b.reference
              WHERE a.o IS NULL OR b.o IS NULL
                 OR (a.buyer, a.product, a.creator, a.docs, a.events) IS DISTINCT FROM (b.buyer, b.product, b.creator, b.docs, b.events)",
            &[&VIBOTAJ, &CLONE],
        )
        .unwrap()
        .get(0);
    assert_eq!(mismatched, 0, "every foreign key of the clone points at the clone's copy of the source's row");
    let keys_left: i64 = su.query_one("SELECT count(*) FROM tenancy.clone_keys", &[]).unwrap().get(0);
    assert_eq!(keys_left, 0);
    let not_ok: i64 =
        su.query_one("SELECT count(*) FROM tenancy.validate_client_data_integrity() WHERE NOT ok", &[]).unwrap().get(0);
    assert_eq!(not_ok, 0, "no row of the clone points at another organization's row");

    // 4. Erase the clone while a writer works in another organization; killed once, then resumed.
    let clone_rows = rows_of(&mut su, CLONE);
    assert!(clone_rows > 200_000);
    su.batch_execute(&format!("SELECT tenancy.deactivate_organization('{CLONE}')")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicI64::new(0));
    let writer = {
        let (stop, writes) = (stop.clone(), writes.clone());
        let mut w = connect("postgres", src);
        w.batch_execute("SET ROLE lc_app; SET lock_timeout = '5s'").unwrap();
        thread::spawn(move || {
            let mut max = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut tx = w.transaction().unwrap();
                tx.batch_execute(&format!(
                    "SET LOCAL tenancy.user_id = '{WRITER_USER}'; SELECT tenancy.set_organization('{WRITER_ORG}');
                     INSERT INTO parties (name, kind) VALUES ('written during the erase', 'buyer');
                     UPDATE parties SET kind = kind WHERE id = (SELECT max(id) FROM parties);"
                ))
                .expect("the writer's transaction");
                tx.commit().unwrap();
                max = max.max(t.elapsed());
                writes.fetch_add(1, Ordering::Relaxed);
            }
            max
        })
    };
    wait_for("the writer", Duration::from_secs(30), || writes.load(Ordering::Relaxed) > 10);

    let mut eraser = connect("postgres", src);
    let pid: i32 = eraser.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let call = thread::spawn(move || {
        eraser
            .batch_execute(&format!("CALL tenancy.erase_organization('{CLONE}', batch_size => 2000, pause => '5ms')"))
            .map_err(|e| e.to_string())
    });
    let mut watcher = superuser_of(src);
    wait_for("a third of the clone deleted", Duration::from_secs(300), || {
        watcher
            .query_one("SELECT coalesce(sum(rows_deleted), 0)::bigint FROM tenancy.erase_progress", &[])
            .unwrap()
            .get::<_, i64>(0)
            > clone_rows / 3
    });
    watcher.execute("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
    assert!(call.join().unwrap().is_err(), "the killed CALL ends with an error");
    let left_after_kill = rows_of(&mut su, CLONE);
    assert!(
        left_after_kill > 0 && left_after_kill < clone_rows,
        "killed mid-way: {left_after_kill} of {clone_rows} left"
    );
    let running: i64 = su
        .query_one(
            "SELECT count(*) FROM tenancy.erasures WHERE organization_id = $1::text::uuid AND status = 'running'",
            &[&CLONE],
        )
        .unwrap()
        .get(0);
    assert_eq!(running, 1, "the record says the erase is running");

    let mut again = superuser_of(src);
    again.batch_execute(&format!("CALL tenancy.erase_organization('{CLONE}', batch_size => 2000)")).unwrap();
    stop.store(true, Ordering::Relaxed);
    let writer_max = writer.join().unwrap();
    let written = writes.load(Ordering::Relaxed);

    assert_eq!(rows_of(&mut su, CLONE), 0, "no row of the clone left");
    assert_eq!(fingerprint(&mut su, VIBOTAJ), vibotaj_before, "VIBOTAJ unchanged");
    let writer_rows: i64 = su
        .query_one(
            "SELECT count(*) FROM parties WHERE organization_id = $1::text::uuid AND name = 'written during the erase'",
            &[&WRITER_ORG],
        )
        .unwrap()
        .get(0);
    assert_eq!(writer_rows, written, "every row the writer wrote is there");
    let r = su
        .query_one(
            "SELECT status, verified, (SELECT sum(value::bigint) FROM jsonb_each_text(rows_deleted))::bigint,
                    catalog_rows_deleted->>'tenancy.organizations', requested_by::text
               FROM tenancy.erasures WHERE organization_id = $1::text::uuid",
            &[&CLONE],
        )
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "completed");
    assert!(r.get::<_, bool>(1));
    assert_eq!(r.get::<_, i64>(2), clone_rows, "the record counts every row deleted, across the kill");
    assert_eq!(r.get::<_, String>(3), "1");
    assert_eq!(r.get::<_, String>(4), "postgres");
    let orgs: i64 =
        su.query_one("SELECT count(*) FROM tenancy.organizations WHERE id = $1::text::uuid", &[&CLONE]).unwrap().get(0);
    assert_eq!(orgs, 0);
    let log: Vec<String> = su
        .query(
            "SELECT status FROM tenancy.migration_log WHERE operation = 'erase_organization' AND details->>'organization_id' = $1 ORDER BY id",
            &[&CLONE],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(log, ["started", "succeeded"]);
    println!(
        "lifecycle: export {} lines, import equal by fingerprint, clone equal by counts and references, \
         erase of the clone's {clone_rows} rows through one kill, {written} writer transactions (slowest {writer_max:?})",
        lines.len()
    );
    let _ = std::fs::remove_file(&file);
}

/// (case, SQLSTATE expected, what happened).
type Case = (&'static str, &'static str, String);

#[test]
fn bad_input_and_attacks_fail_and_change_nothing() {
    let db = "lc_attacks";
    seed_db(db, 500);
    let mut su = superuser_of(db);
    let vibotaj = fingerprint(&mut su, VIBOTAJ);
    let acme = fingerprint(&mut su, ACME);
    let file = tmp_file("lc_attacks_vibotaj.jsonl");
    export_to_file(db, VIBOTAJ, &file);
    let mut cases: Vec<Case> = Vec::new();
    let mut run = |name: &'static str, want: &'static str, r: Result<Vec<postgres::Row>, postgres::Error>| {
        let got = sqlstate(r);
        println!("lifecycle case: {name}: expected {want}, got {got}{}", if want == got { "" } else { "  <-- WRONG" });
        cases.push((name, want, got));
    };
    let fresh = || superuser_of(db);

    // Bad input.
    run(
        "erase an active organization",
        "55000",
        fresh().query(&format!("CALL tenancy.erase_organization('{VIBOTAJ}')"), &[]),
    );
    run(
        "erase an unknown organization",
        "42704",
        fresh().query("CALL tenancy.erase_organization('99999999-0000-0000-0000-000000000000')", &[]),
    );
    run(
        "export an unknown organization",
        "42704",
        fresh().query("SELECT * FROM tenancy.export_organization('99999999-0000-0000-0000-000000000000')", &[]),
    );
    load_export(db, "vibotaj_export", &file);
    run(
        "import into an organization that exists",
        "23505",
        fresh().query("CALL tenancy.import_organization('vibotaj_export')", &[]),
    );
    fresh()
        .batch_execute(
            "CREATE TABLE old_export AS SELECT * FROM vibotaj_export;
             UPDATE old_export SET line = replace(line, '\"tenancy_version\" : \"0.3.0\"', '\"tenancy_version\" : \"0.2.0\"') WHERE n = 1;",
        )
        .unwrap();
    fresh().batch_execute(&format!("SELECT tenancy.deactivate_organization('{ACME}')")).unwrap();
    // An export of another version, even for an organization that does not exist here.
    fresh()
        .batch_execute(&format!("UPDATE old_export SET line = replace(line, '{VIBOTAJ}', '99999999-0000-0000-0000-000000000001') WHERE n = 1"))
        .unwrap();
    run(
        "import an export of another tenancy version",
        "0A000",
        fresh().query("CALL tenancy.import_organization('old_export')", &[]),
    );
    fresh()
        .batch_execute(&format!(
            "CREATE TABLE v1_export AS SELECT * FROM vibotaj_export;
             UPDATE v1_export SET line = replace(replace(line, '\"format_version\" : 2', '\"format_version\" : 1'),
                                                 '{VIBOTAJ}', '99999999-0000-0000-0000-000000000002') WHERE n = 1;"
        ))
        .unwrap();
    run(
        "import an export of another format version",
        "22023",
        fresh().query("CALL tenancy.import_organization('v1_export')", &[]),
    );
    fresh()
        .batch_execute(&format!(
            "CREATE TABLE bad_index AS SELECT * FROM vibotaj_export;
             UPDATE bad_index SET line = replace(line, '{VIBOTAJ}', '99999999-0000-0000-0000-000000000003') WHERE n = 1;
             UPDATE bad_index SET line = regexp_replace(line, '^\\[[0-9]+', '[\"0\"') WHERE n = (SELECT max(n) - 1 FROM bad_index);
             CREATE TABLE not_json AS SELECT * FROM bad_index;
             UPDATE not_json SET line = (SELECT line FROM vibotaj_export v WHERE v.n = not_json.n) WHERE n = (SELECT max(n) - 1 FROM not_json);
             UPDATE not_json SET line = left(line, -1) WHERE n = 2;"
        ))
        .unwrap();
    run(
        "import an export whose row line does not start with a table index",
        "22023",
        fresh().query("CALL tenancy.import_organization('bad_index')", &[]),
    );
    run(
        "import an export with a line that is not JSON",
        "22023",
        fresh().query("CALL tenancy.import_organization('not_json')", &[]),
    );
    run(
        "clone into a slug that exists",
        "23505",
        fresh().query(&format!("CALL tenancy.clone_organization('{VIBOTAJ}', 'Copy', 'acme')"), &[]),
    );
    run(
        "clone an unknown organization",
        "42704",
        fresh().query("CALL tenancy.clone_organization('99999999-0000-0000-0000-000000000000', 'Copy', 'copy')", &[]),
    );
    let clones: i64 = su.query_one("SELECT count(*) FROM tenancy.clones", &[]).unwrap().get(0);
    assert_eq!(clones, 0);
    let orgs: i64 = su.query_one("SELECT count(*) FROM tenancy.organizations", &[]).unwrap().get(0);
    let imports: i64 = su.query_one("SELECT count(*) FROM tenancy.imports", &[]).unwrap().get(0);
    let erasures: i64 = su.query_one("SELECT count(*) FROM tenancy.erasures", &[]).unwrap().get(0);
    assert_eq!((orgs, imports, erasures), (3, 0, 0), "bad input created no organization, import or erasure");

    // A table owner (not an administrator) plants code in a policy of its table; an
    // administrator's export must not run it with the administrator's rights (it could grant
    // itself UPDATE on tenancy.organizations): the export is refused, and the code never ran.
    // (The administrator may read every table, as an export needs.)
    fresh()
        .batch_execute(
            "GRANT CREATE ON SCHEMA public TO lc_tables; GRANT SELECT ON ALL TABLES IN SCHEMA public TO tracehub_owner;",
        )
        .unwrap();
    let mut planter = connect("postgres", db);
    planter
        .batch_execute(
            "SET ROLE lc_tables;
             CREATE FUNCTION public.lc_spy() RETURNS boolean LANGUAGE plpgsql AS
               $f$ BEGIN PERFORM pg_catalog.set_config('lc.spy', current_user, false); RETURN true; END $f$;
             CREATE POLICY lc_spy ON shipments AS RESTRICTIVE FOR SELECT USING (public.lc_spy());",
        )
        .unwrap();
    let mut admin = connect("tracehub_owner", db);
    let planted = admin.query(&format!("SELECT * FROM tenancy.export_organization('{VIBOTAJ}')"), &[]);
    let spied: Option<String> = admin.query_one("SELECT current_setting('lc.spy', true)", &[]).unwrap().get(0);
    println!("lifecycle case: the table owner's policy code ran as: {spied:?}");
    run("an administrator's export of a table whose owner planted policy code", "0A000", planted);
    assert_ne!(spied.as_deref(), Some("tracehub_owner"), "the table owner's code ran with the administrator's rights");
    planter.batch_execute("DROP POLICY lc_spy ON shipments; DROP FUNCTION public.lc_spy()").unwrap();
    // The table owner plants an import source whose line column has a type of its own, with a
    // cast to text that reports who runs it: an administrator importing it must not run that
    // cast (nor a policy, a view's functions or another type's code) with its own rights.
    planter
        .batch_execute(
            "SET ROLE lc_tables;
             CREATE TYPE public.lc_line AS (t text);
             CREATE FUNCTION public.lc_line_text(public.lc_line) RETURNS text LANGUAGE plpgsql AS
               $f$ BEGIN RAISE EXCEPTION 'lc spy ran as %', current_user; END $f$;
             CREATE CAST (public.lc_line AS text) WITH FUNCTION public.lc_line_text(public.lc_line);
             CREATE TABLE public.lc_planted (n bigint, line public.lc_line);
             INSERT INTO public.lc_planted VALUES (1, ROW('{}'));
             GRANT SELECT ON public.lc_planted TO tracehub_owner;
             CREATE VIEW public.lc_planted_view AS SELECT n, (line).t AS line FROM public.lc_planted WHERE public.lc_line_text(line) IS NOT NULL;
             GRANT SELECT ON public.lc_planted_view TO tracehub_owner;
             CREATE TABLE public.lc_planted_rls (n bigint, line text);
             INSERT INTO public.lc_planted_rls VALUES (1, '{}');
             ALTER TABLE public.lc_planted_rls ENABLE ROW LEVEL SECURITY;
             CREATE POLICY lc_spy ON public.lc_planted_rls USING (public.lc_line_text(ROW(line)::public.lc_line) IS NOT NULL);
             GRANT SELECT ON public.lc_planted_rls TO tracehub_owner;",
        )
        .unwrap();
    for (name, source) in [
        ("an administrator's import of a source whose line type has its owner's cast", "public.lc_planted"),
        ("an administrator's import of another role's view", "public.lc_planted_view"),
        ("an administrator's import of another role's table with a policy", "public.lc_planted_rls"),
    ] {
        let r = admin.query(&format!("CALL tenancy.import_organization('{source}')"), &[]);
        let message =
            r.as_ref().err().and_then(|e| e.as_db_error().map(|d| d.message().to_string())).unwrap_or_default();
        assert!(!message.contains("lc spy ran as"), "{name}: the table owner's code ran: {message}");
        run(name, "0A000", r);
    }
    planter
        .batch_execute("DROP VIEW public.lc_planted_view; DROP TABLE public.lc_planted, public.lc_planted_rls; DROP CAST (public.lc_line AS text); DROP FUNCTION public.lc_line_text(public.lc_line); DROP TYPE public.lc_line;")
        .unwrap();
    fresh().batch_execute("REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM tracehub_owner").unwrap();

    // Rows outside ACME referencing its rows stop the erase before anything is deleted: a
    // non-tenant table, and a tenant table whose foreign key does not carry the tenant column
    // (ON DELETE CASCADE would delete VIBOTAJ's row).
    fresh()
        .batch_execute(&format!(
            "CREATE TABLE archive (id serial PRIMARY KEY, shipment_id int REFERENCES shipments (id) ON DELETE SET NULL);
             INSERT INTO archive (shipment_id) SELECT min(id) FROM shipments WHERE organization_id = '{ACME}';
             CREATE TABLE links (id serial PRIMARY KEY, organization_id uuid NOT NULL REFERENCES tenancy.organizations,
                                 shipment_id int REFERENCES shipments (id) ON DELETE CASCADE);
             SELECT tenancy.register_table('links');
             GRANT SELECT, DELETE ON links TO lc_app, lc_tables;
             GRANT SELECT ON vibotaj_export TO lc_app, lc_tables;
             INSERT INTO links (organization_id, shipment_id) SELECT '{VIBOTAJ}', min(id) FROM shipments WHERE organization_id = '{ACME}';"
        ))
        .unwrap();
    let refused = fresh().query(&format!("CALL tenancy.erase_organization('{ACME}')"), &[]);
    let message =
        refused.as_ref().err().and_then(|e| e.as_db_error().map(|d| d.message().to_string())).unwrap_or_default();
    run("erase while other rows reference the organization's rows", "23503", refused);
    assert!(message.contains("public.archive") && message.contains("public.links"), "the report names both: {message}");
    let links: i64 = su.query_one("SELECT count(*) FROM links", &[]).unwrap().get(0);
    let archived: i64 = su.query_one("SELECT count(shipment_id) FROM archive", &[]).unwrap().get(0);
    assert_eq!((links, archived), (1, 1), "the other organization's row and the archive's reference are intact");
    assert_eq!(fingerprint(&mut su, ACME), acme, "nothing of ACME deleted");

    // Attacks on export: a viewer and a member of VIBOTAJ, and the owner of another
    // organization, may not export VIBOTAJ; the owner of VIBOTAJ may, and gets its rows only.
    let export = format!("SELECT * FROM tenancy.export_organization('{VIBOTAJ}')");
    run("a viewer exports its organization", "42501", as_user(db, VIBOTAJ_VIEWER, &export));
    run("a member exports its organization", "42501", as_user(db, VIBOTAJ_MEMBER, &export));
    // A user of another organization does not even see that VIBOTAJ exists (RLS on
    // tenancy.organizations): told it does not exist, as for an organization that does not.
    run("the owner of another organization exports VIBOTAJ", "42704", as_user(db, WRITER_USER, &export));
    let own = as_user(db, VIBOTAJ_OWNER, &export).expect("an owner exports its own organization");
    // Seed 000's rows and VIBOTAJ's row of links, which references ACME's shipment: reported.
    assert_eq!(own.len(), 230_760 + 1 + 2);
    let header: String = own[0].get(0);
    assert!(
        header.contains("\"references\": \"public.shipments\"") && header.contains("\"table\": \"public.links\""),
        "{header}"
    );
    // Attacks on erase and import: the table owner (not an administrator), a member and the
    // application role.
    let mut tables_owner = connect("postgres", db);
    tables_owner.batch_execute("SET ROLE lc_tables").unwrap();
    run(
        "the tables' owner (not an administrator) erases ACME",
        "42501",
        tables_owner.query(&format!("CALL tenancy.erase_organization('{ACME}')"), &[]),
    );
    run(
        "an owner of VIBOTAJ erases ACME",
        "42501",
        as_user(db, VIBOTAJ_OWNER, &format!("CALL tenancy.erase_organization('{ACME}')")),
    );
    run(
        "the tables' owner clones VIBOTAJ",
        "42501",
        tables_owner.query(&format!("CALL tenancy.clone_organization('{VIBOTAJ}', 'Copy', 'copy')"), &[]),
    );
    run(
        "the tables' owner imports an export",
        "42501",
        tables_owner.query("CALL tenancy.import_organization('vibotaj_export')", &[]),
    );
    // Start ACME's erasure (the references removed), then interrupt it: while it runs, nobody
    // but an administrator may delete through it, and it cannot be pointed at another
    // organization's rows.
    fresh().batch_execute("DELETE FROM archive; DELETE FROM links;").unwrap();
    fresh()
        .batch_execute(&format!(
            "SELECT tenancy._privileged('erase_begin', jsonb_build_object('organization_id', '{ACME}'))"
        ))
        .unwrap();
    run(
        "the tables' owner deletes a batch of a running erase",
        "42501",
        tables_owner.query(&format!("SELECT tenancy._erase_batch('shipments'::regclass, '{ACME}', 100000)"), &[]),
    );
    run(
        "a member deletes a batch of a running erase",
        "42501",
        as_user(db, VIBOTAJ_OWNER, &format!("SELECT tenancy._erase_batch('shipments'::regclass, '{ACME}', 100000)")),
    );
    run(
        "an administrator points an erase batch at an active organization",
        "55000",
        fresh().query(&format!("SELECT tenancy._erase_batch('shipments'::regclass, '{VIBOTAJ}', 100000)"), &[]),
    );
    run(
        "the tables' owner writes the erasure record",
        "42501",
        tables_owner.query(
            &format!("SELECT tenancy._privileged('erase_finish', jsonb_build_object('organization_id', '{ACME}', 'verified', true))"),
            &[],
        ),
    );
    assert_eq!(fingerprint(&mut su, VIBOTAJ), vibotaj, "VIBOTAJ unchanged by every attack");
    assert_eq!(fingerprint(&mut su, ACME), acme, "ACME unchanged until its erase runs");

    // The erase then runs to its end.
    fresh().batch_execute(&format!("CALL tenancy.erase_organization('{ACME}')")).unwrap();
    assert_eq!(rows_of(&mut su, ACME), 0);
    assert_eq!(fingerprint(&mut su, VIBOTAJ), vibotaj);

    // Usage: every organization's rows for the administrator, its own for a member.
    let usage: Vec<(String, i64)> = su
        .query(
            "SELECT organization_slug, sum(rows)::bigint FROM tenancy.organization_usage() GROUP BY 1 ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(usage, [("vibotaj".to_string(), 230_760)]);
    let mine = as_user(db, VIBOTAJ_MEMBER, "SELECT count(DISTINCT organization_id) FROM tenancy.organization_usage()")
        .unwrap();
    assert_eq!(mine[0].get::<_, i64>(0), 1);
    let theirs =
        as_user(db, WRITER_USER, "SELECT coalesce(sum(rows), 0)::bigint FROM tenancy.organization_usage()").unwrap();
    assert_eq!(theirs[0].get::<_, i64>(0), 0, "a user of another organization counts none of VIBOTAJ's rows");

    let failed: Vec<&Case> = cases.iter().filter(|(_, want, got)| want != got).collect();
    println!("lifecycle: {} bad-input and attack cases, {} wrong", cases.len(), failed.len());
    assert!(failed.is_empty(), "{} cases did not fail as they must: {failed:?}", failed.len());
    let _ = std::fs::remove_file(&file);
}

const TREE: &str = "00000000-0000-0000-0000-0000000000e1";
const TREE_CLONE: &str = "00000000-0000-0000-0000-0000000000e2";

/// A database with `categories` (a foreign key to itself, carrying the tenant column), owned by
/// lc_tables, converted and isolated; organization TREE with `n` rows in it when `n` > 0.
fn tree_db(db: &str, n: i64) -> postgres::Client {
    let mut c = fresh_db(db);
    c.batch_execute(
        "CREATE EXTENSION tenancy;
         CREATE TABLE categories (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                                  organization_id uuid NOT NULL REFERENCES tenancy.organizations,
                                  parent_id bigint, name text NOT NULL,
                                  UNIQUE (organization_id, id), UNIQUE (organization_id, name),
                                  FOREIGN KEY (organization_id, parent_id) REFERENCES categories (organization_id, id));
         CREATE INDEX ON categories (organization_id, parent_id);
         ALTER TABLE categories OWNER TO lc_tables;
         SELECT tenancy.register_table('categories');
         SELECT tenancy.enable_isolation('categories');",
    )
    .unwrap();
    if n > 0 {
        // Rows 1..n: row i's parent is row i / 3 (a wide tree), except that every seventh row's
        // parent comes after it (a parent with a higher key: a later batch), row 1 points at
        // itself, and rows n+1..n+3 form a cycle. Keys start at 1000 (the sequence after n+3).
        c.batch_execute(&format!(
            "SELECT tenancy.create_organization('Tree', 'tree', id => '{TREE}');
             INSERT INTO categories (id, organization_id, parent_id, name)
             SELECT 1000 + i, '{TREE}', NULL, 'c' || i FROM generate_series(1, {n} + 3) i;
             UPDATE categories SET parent_id = 1000 + CASE WHEN id = 1001 THEN 1 WHEN id % 7 = 0 THEN least(id - 1000 + 5, {n})
                                                           ELSE greatest((id - 1000) / 3, 1) END
              WHERE id <= 1000 + {n};
             UPDATE categories SET parent_id = CASE id WHEN 1000 + {n} + 1 THEN 1000 + {n} + 3 ELSE id - 1 END WHERE id > 1000 + {n};
             SELECT setval(pg_get_serial_sequence('categories', 'id'), 1000 + {n} + 3);"
        ))
        .unwrap();
    }
    c
}

/// (name, parent's name) of every row of organization `org`, sorted: the tree's shape, whatever
/// the keys.
fn tree_of(c: &mut postgres::Client, org: &str) -> Vec<(String, Option<String>)> {
    c.query(
        &format!(
            "SELECT c.name, p.name FROM categories c LEFT JOIN categories p ON p.organization_id = c.organization_id AND p.id = c.parent_id
              WHERE c.organization_id = '{org}' ORDER BY 1"
        ),
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// A table whose foreign key points at itself (a tree, a cycle, a row that is its own parent, a
/// parent with a higher key than its child): the clone maps every reference to the clone's own
/// rows (a reference to a row of a later batch included), export and import keep the tree, and
/// the erase deletes children before parents (the cycle in one statement), in small batches.
#[test]
fn a_table_that_references_itself_is_cloned_exported_imported_and_erased_whole() {
    let n = 200;
    let mut c = tree_db("lc_tree", n);
    let source = tree_of(&mut c, TREE);
    assert_eq!(source.len() as i64, n + 3);
    assert_eq!(source.iter().filter(|(_, p)| p.is_none()).count(), 0, "every row of the source has a parent");

    // Clone, in batches of 7: the same tree, every reference inside the clone.
    psql(
        "lc_tree",
        &[
            "-c",
            &format!(
                "CALL tenancy.clone_organization('{TREE}', 'Tree copy', 'tree-copy', '{TREE_CLONE}', batch_size => 7)"
            ),
        ],
    );
    assert_eq!(tree_of(&mut c, TREE_CLONE), source, "the clone has the source's tree");
    let outside: i64 = c
        .query_one(
            &format!(
                "SELECT count(*) FROM categories c WHERE c.organization_id = '{TREE_CLONE}'
                    AND NOT EXISTS (SELECT 1 FROM categories p WHERE p.organization_id = '{TREE_CLONE}' AND p.id = c.parent_id)"
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(outside, 0, "every reference of the clone points inside the clone");
    assert_eq!(tree_of(&mut c, TREE), source, "the source is unchanged");

    // Export, and import into another database (same keys), in batches of 7.
    let file = tmp_file("lc_tree.jsonl");
    export_to_file("lc_tree", TREE, &file);
    let mut other = tree_db("lc_tree_import", 0);
    load_export("lc_tree_import", "tree_export", &file);
    psql("lc_tree_import", &["-c", "CALL tenancy.import_organization('tree_export', batch_size => 7)"]);
    assert_eq!(tree_of(&mut other, TREE), source, "the import has the source's tree");
    let keys = |c: &mut postgres::Client| -> Vec<(i64, Option<i64>)> {
        c.query(&format!("SELECT id, parent_id FROM categories WHERE organization_id = '{TREE}' ORDER BY 1"), &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    assert_eq!(keys(&mut other), keys(&mut c), "the import keeps every key");
    let _ = std::fs::remove_file(&file);

    // Erase the clone in batches of 5: parents last, the cycle whole.
    psql("lc_tree", &["-c", &format!("SELECT tenancy.deactivate_organization('{TREE_CLONE}')")]);
    psql("lc_tree", &["-c", &format!("CALL tenancy.erase_organization('{TREE_CLONE}', batch_size => 5)")]);
    let left: i64 = c
        .query_one(&format!("SELECT count(*) FROM categories WHERE organization_id = '{TREE_CLONE}'"), &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "no row of the clone is left");
    let deleted: i64 = c
        .query_one(
            &format!(
                "SELECT (rows_deleted->>'public.categories')::bigint FROM tenancy.erasures
                  WHERE organization_id = '{TREE_CLONE}' AND status = 'completed'"
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(deleted, n + 3, "the erasure record counts every row");
    assert_eq!(tree_of(&mut c, TREE), source, "the source is unchanged");
    println!("lifecycle: a tree of {} rows (a cycle, a row its own parent, parents after children) cloned, exported, imported and erased whole", n + 3);
}

const PART: &str = "00000000-0000-0000-0000-0000000000f1";
const PART_OTHER: &str = "00000000-0000-0000-0000-0000000000f2";
const PART_CLONE: &str = "00000000-0000-0000-0000-0000000000f3";

/// A database with two partitioned tenant tables owned by lc_tables, converted and isolated:
/// `events` (LIST by organization, one partition for PART and a default one) and `items`
/// (HASH by organization, a foreign key to events carrying the tenant column), both with a
/// primary key of the tenant column and an identity. With `rows`: PART and PART_OTHER with
/// 120 events and 2 items per event each.
fn partitioned_db(db: &str, rows: bool) -> postgres::Client {
    let mut c = fresh_db(db);
    c.batch_execute(&format!(
        "CREATE EXTENSION tenancy;
         CREATE TABLE events (id bigint GENERATED BY DEFAULT AS IDENTITY, organization_id uuid NOT NULL REFERENCES tenancy.organizations,
                              happened_on date NOT NULL, note text, PRIMARY KEY (organization_id, id))
           PARTITION BY LIST (organization_id);
         CREATE TABLE events_part PARTITION OF events FOR VALUES IN ('{PART}');
         CREATE TABLE events_rest PARTITION OF events DEFAULT;
         CREATE TABLE items (id bigint GENERATED BY DEFAULT AS IDENTITY, organization_id uuid NOT NULL REFERENCES tenancy.organizations,
                             event_id bigint NOT NULL, qty int NOT NULL, PRIMARY KEY (organization_id, id),
                             FOREIGN KEY (organization_id, event_id) REFERENCES events (organization_id, id))
           PARTITION BY HASH (organization_id);
         CREATE TABLE items_0 PARTITION OF items FOR VALUES WITH (MODULUS 2, REMAINDER 0);
         CREATE TABLE items_1 PARTITION OF items FOR VALUES WITH (MODULUS 2, REMAINDER 1);
         ALTER TABLE events OWNER TO lc_tables; ALTER TABLE events_part OWNER TO lc_tables; ALTER TABLE events_rest OWNER TO lc_tables;
         ALTER TABLE items OWNER TO lc_tables; ALTER TABLE items_0 OWNER TO lc_tables; ALTER TABLE items_1 OWNER TO lc_tables;
         SELECT tenancy.register_table('events'); SELECT tenancy.enable_isolation('events');
         SELECT tenancy.register_table('items'); SELECT tenancy.enable_isolation('items');"
    ))
    .unwrap();
    if rows {
        c.batch_execute(&format!(
            "SELECT tenancy.create_organization('Part', 'part', id => '{PART}');
             SELECT tenancy.create_organization('Part other', 'part-other', id => '{PART_OTHER}');
             INSERT INTO events (organization_id, happened_on, note)
             SELECT o, date '2026-01-01' + g, 'e' || g FROM generate_series(1, 120) g, (VALUES ('{PART}'::uuid), ('{PART_OTHER}')) v(o);
             INSERT INTO items (organization_id, event_id, qty) SELECT e.organization_id, e.id, k FROM events e, generate_series(1, 2) k;
             ANALYZE;"
        ))
        .unwrap();
    }
    c
}

/// (event note, event date, item quantities) of organization `org`, sorted: its rows whatever
/// the keys, each item through its event.
fn partitioned_rows(c: &mut postgres::Client, org: &str) -> Vec<(String, String, String)> {
    c.query(
        &format!(
            "SELECT e.note, e.happened_on::text, coalesce(string_agg(i.qty::text, ',' ORDER BY i.qty), '')
               FROM events e LEFT JOIN items i ON i.organization_id = e.organization_id AND i.event_id = e.id
              WHERE e.organization_id = '{org}' GROUP BY e.organization_id, e.id ORDER BY 1"
        ),
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn count_of(c: &mut postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// Partitioned tenant tables (LIST and HASH by the tenant column, with a default partition):
/// usage, export, import into another database (same keys), clone (every reference inside the
/// clone, the other organization unchanged) and erase in small batches. A partitioned table the
/// clone cannot copy (its primary key has two columns besides the tenant column, as a RANGE
/// partitioning by date needs) is refused with 0A000 before anything is created.
#[test]
fn partitioned_tenant_tables_are_exported_imported_cloned_and_erased() {
    let mut c = partitioned_db("lc_part", true);
    let source = partitioned_rows(&mut c, PART);
    let other = partitioned_rows(&mut c, PART_OTHER);
    assert_eq!(source.len(), 120);
    let usage: Vec<(String, String, i64)> = c
        .query("SELECT organization_slug, table_name, rows FROM tenancy.organization_usage() ORDER BY 1, 2", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        usage,
        vec![
            ("part".into(), "public.events".into(), 120),
            ("part".into(), "public.items".into(), 240),
            ("part-other".into(), "public.events".into(), 120),
            ("part-other".into(), "public.items".into(), 240),
        ],
        "usage counts the partitions"
    );

    // Export, and import into another database (same keys) in batches of 50.
    let file = tmp_file("lc_part.jsonl");
    export_to_file("lc_part", PART, &file);
    let mut imported = partitioned_db("lc_part_import", false);
    load_export("lc_part_import", "part_export", &file);
    psql("lc_part_import", &["-c", "CALL tenancy.import_organization('part_export', batch_size => 50)"]);
    assert_eq!(partitioned_rows(&mut imported, PART), source, "the import has the source's rows");
    let keys = |c: &mut postgres::Client| -> Vec<(i64, i64)> {
        c.query(&format!("SELECT id, event_id FROM items WHERE organization_id = '{PART}' ORDER BY 1"), &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    assert_eq!(keys(&mut imported), keys(&mut c), "the import keeps every key");
    assert_eq!(
        count_of(&mut imported, &format!("SELECT count(*) FROM ONLY events_part WHERE organization_id = '{PART}'")),
        120,
        "the imported events are in their partition"
    );
    let _ = std::fs::remove_file(&file);

    // Clone in batches of 50: the same rows, new keys, every item of the clone on an event of
    // the clone.
    psql(
        "lc_part",
        &[
            "-c",
            &format!(
                "CALL tenancy.clone_organization('{PART}', 'Part copy', 'part-copy', '{PART_CLONE}', batch_size => 50)"
            ),
        ],
    );
    assert_eq!(partitioned_rows(&mut c, PART_CLONE), source, "the clone has the source's rows");
    assert_eq!(
        count_of(
            &mut c,
            &format!(
                "SELECT count(*) FROM items i WHERE i.organization_id = '{PART_CLONE}'
                    AND NOT EXISTS (SELECT 1 FROM events e WHERE e.organization_id = '{PART_CLONE}' AND e.id = i.event_id)"
            )
        ),
        0,
        "every reference of the clone points inside the clone"
    );
    assert_eq!(
        count_of(
            &mut c,
            &format!(
                "SELECT count(*) FROM events a JOIN events b ON a.id = b.id
                  WHERE a.organization_id = '{PART}' AND b.organization_id = '{PART_CLONE}'"
            )
        ),
        0,
        "the clone's keys are new"
    );
    assert_eq!(partitioned_rows(&mut c, PART), source, "the source is unchanged");

    // Erase the clone in batches of 35 (children first).
    psql("lc_part", &["-c", &format!("SELECT tenancy.deactivate_organization('{PART_CLONE}')")]);
    psql("lc_part", &["-c", &format!("CALL tenancy.erase_organization('{PART_CLONE}', batch_size => 35)")]);
    assert_eq!(
        count_of(
            &mut c,
            &format!(
                "SELECT (SELECT count(*) FROM events WHERE organization_id = '{PART_CLONE}')
                      + (SELECT count(*) FROM items WHERE organization_id = '{PART_CLONE}')"
            )
        ),
        0,
        "no row of the clone is left"
    );
    assert_eq!(
        count_of(
            &mut c,
            &format!(
                "SELECT ((rows_deleted->>'public.events')::int + (rows_deleted->>'public.items')::int)::bigint FROM tenancy.erasures
                  WHERE organization_id = '{PART_CLONE}' AND status = 'completed'"
            )
        ),
        360,
        "the erasure record counts every row"
    );
    assert_eq!(partitioned_rows(&mut c, PART), source, "the source is unchanged");
    assert_eq!(partitioned_rows(&mut c, PART_OTHER), other, "the other organization is unchanged");

    // A table partitioned by date: its primary key needs the date too, so the clone cannot map
    // it. Refused before the new organization (or the clone record) exists.
    c.batch_execute(
        "CREATE TABLE readings (id bigint GENERATED ALWAYS AS IDENTITY, organization_id uuid NOT NULL REFERENCES tenancy.organizations,
                                taken_on date NOT NULL, PRIMARY KEY (organization_id, taken_on, id)) PARTITION BY RANGE (taken_on);
         CREATE TABLE readings_2026 PARTITION OF readings FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         SELECT tenancy.register_table('readings');",
    )
    .unwrap();
    let before =
        count_of(&mut c, "SELECT (SELECT count(*) FROM tenancy.organizations) + (SELECT count(*) FROM tenancy.clones)");
    let err = c
        .batch_execute(&format!(
            "CALL tenancy.clone_organization('{PART}', 'Part copy 2', 'part-copy-2', batch_size => 50)"
        ))
        .expect_err("a clone that cannot map a table is refused");
    let db_err = err.as_db_error().expect("a database error");
    assert_eq!(db_err.code().code(), "0A000", "{db_err:?}");
    assert!(db_err.message().contains("readings"), "{}", db_err.message());
    assert_eq!(
        count_of(&mut c, "SELECT (SELECT count(*) FROM tenancy.organizations) + (SELECT count(*) FROM tenancy.clones)"),
        before,
        "no organization and no clone record were created"
    );
    assert_eq!(count_of(&mut c, "SELECT count(*) FROM tenancy.organizations WHERE slug = 'part-copy-2'"), 0);
    println!("lifecycle: partitioned tenant tables (LIST and HASH by organization) exported, imported, cloned and erased; a clone that cannot map a table refused before anything was created");
}

const HIDDEN: &str = "00000000-0000-0000-0000-0000000000d1";
const HIDDEN_COPY: &str = "00000000-0000-0000-0000-0000000000d2";

/// Rows the table's owner hides from itself with a policy of its own (RESTRICTIVE, not tenancy's)
/// are rows a clone cannot copy: it stops with 55000 at the table's last batch, and resumes once
/// the policy is gone. They are rows the erase cannot delete: the verification counts every row (row-level security
/// bypassed, as nothing of the owner's can run in that count), so the erase stops with 55000 and
/// stays incomplete instead of recording itself verified with those rows left (or going over the
/// tables forever); once the policy is gone, the same CALL finishes it. The table has no foreign
/// key to tenancy.organizations, which would otherwise stop the erase's last step instead.
#[test]
fn rows_hidden_from_a_clone_or_an_erase_stop_it_instead_of_a_silent_gap() {
    let mut c = fresh_db("lc_hidden");
    c.batch_execute(&format!(
        "CREATE EXTENSION tenancy;
         CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, organization_id uuid NOT NULL,
                             body text NOT NULL, UNIQUE (organization_id, id));
         ALTER TABLE notes OWNER TO lc_tables;
         SELECT tenancy.register_table('notes');
         SELECT tenancy.enable_isolation('notes');
         SELECT tenancy.create_organization('Hidden', 'hidden', id => '{HIDDEN}');
         INSERT INTO notes (organization_id, body) SELECT '{HIDDEN}', CASE WHEN g <= 2 THEN 'archived' ELSE 'n' || g END
           FROM generate_series(1, 7) g;
         CREATE POLICY owner_hides_archived ON notes AS RESTRICTIVE FOR ALL TO PUBLIC USING (body <> 'archived');"
    ))
    .unwrap();
    // The clone cannot copy the hidden rows either: stopped at the table's last batch (nothing of
    // it written), resumed once the policy is gone.
    let clone = format!(
        "CALL tenancy.clone_organization('{HIDDEN}', 'Hidden copy', 'hidden-copy', '{HIDDEN_COPY}', batch_size => 10)"
    );
    let err = c.batch_execute(&clone).expect_err("rows the clone cannot see stop it");
    let db_err = err.as_db_error().expect("a database error");
    assert_eq!(db_err.code().code(), "55000", "{db_err:?}");
    assert!(db_err.message().contains("2 rows of public.notes in organization"), "{}", db_err.message());
    let copied = |c: &mut postgres::Client| -> i64 {
        c.query_one(&format!("SELECT count(*) FROM notes WHERE organization_id = '{HIDDEN_COPY}'"), &[]).unwrap().get(0)
    };
    assert_eq!(copied(&mut c), 0, "nothing of the refused batch is written");
    c.batch_execute("DROP POLICY owner_hides_archived ON notes").unwrap();
    c.batch_execute(&clone).unwrap();
    assert_eq!(copied(&mut c), 7, "the resumed clone copies every row");
    c.batch_execute(&format!(
        "CREATE POLICY owner_hides_archived ON notes AS RESTRICTIVE FOR ALL TO PUBLIC USING (body <> 'archived');
         SELECT tenancy.deactivate_organization('{HIDDEN}');"
    ))
    .unwrap();
    let left = |c: &mut postgres::Client| -> i64 {
        c.query_one(&format!("SELECT count(*) FROM notes WHERE organization_id = '{HIDDEN}'"), &[]).unwrap().get(0)
    };
    let status = |c: &mut postgres::Client| -> Option<(String, bool)> {
        c.query_opt(&format!("SELECT status, verified FROM tenancy.erasures WHERE organization_id = '{HIDDEN}'"), &[])
            .unwrap()
            .map(|r| (r.get(0), r.get(1)))
    };
    let err = c
        .batch_execute(&format!("CALL tenancy.erase_organization('{HIDDEN}', batch_size => 3)"))
        .expect_err("rows the erase cannot see stop it");
    let db_err = err.as_db_error().expect("a database error");
    assert_eq!(db_err.code().code(), "55000", "{db_err:?}");
    assert!(db_err.message().contains("2 rows of public.notes are hidden"), "{}", db_err.message());
    assert_eq!(left(&mut c), 2, "the visible rows are deleted, the hidden ones are left");
    assert_eq!(status(&mut c), Some(("running".into(), false)), "the erasure is not recorded as complete");
    c.batch_execute("DROP POLICY owner_hides_archived ON notes").unwrap();
    c.batch_execute(&format!("CALL tenancy.erase_organization('{HIDDEN}', batch_size => 3)")).unwrap();
    assert_eq!(left(&mut c), 0, "no row left");
    assert_eq!(status(&mut c), Some(("completed".into(), true)), "completed and verified");
    println!("lifecycle: rows hidden by the owner's own policy stop a clone and an erase (55000, incomplete); both resume once the policy is gone");
}

/// A row whose export line would be over 1 GB (two values of 600 MB: the most a text value, and a
/// tuple of the result, can hold is 1 GB) stops the export with 54000 naming its table, before the
/// line's buffer grows past that (it was an internal error, XX000, from the allocation of the
/// too large tuple).
#[test]
fn a_row_too_large_for_one_export_line_stops_the_export_with_54000() {
    const HUGE: &str = "70000000-0000-4000-8000-000000000001";
    let mut c = fresh_db("lc_huge_line");
    c.batch_execute(&format!(
        "CREATE EXTENSION tenancy;
         CREATE TABLE blobs (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                             organization_id uuid NOT NULL REFERENCES tenancy.organizations, a text, b text);
         SELECT tenancy.register_table('blobs'); SELECT tenancy.enable_isolation('blobs');
         SELECT tenancy.create_organization('Huge', 'huge', id => '{HUGE}');
         INSERT INTO blobs (organization_id, a, b) VALUES ('{HUGE}', 'small', 'row');"
    ))
    .unwrap();
    let export = format!("SELECT line FROM tenancy.export_organization('{HUGE}')");
    assert_eq!(c.query(&export, &[]).unwrap().len(), 3, "the header, the row, the end");
    // One value per statement: a row is formed whole before its values are compressed.
    c.batch_execute("UPDATE blobs SET a = repeat('x', 600000000)").unwrap();
    c.batch_execute("UPDATE blobs SET b = repeat('y', 600000000)").unwrap();
    let e = c.query(&export, &[]).unwrap_err();
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "54000", "{db:?}");
    assert!(db.message().contains("a row of public.blobs makes an export line of more than 1 GB"), "{}", db.message());
    // A row of at most 1 GB is exported whole.
    c.batch_execute("UPDATE blobs SET b = 'small again'").unwrap();
    let lines = c.query(&export, &[]).unwrap();
    let row: String = lines[1].get(0);
    assert_eq!(row.len(), 600_000_000 + format!("[0,1,\"{HUGE}\",\"\",\"small again\"]").len());
}

const CASCADE_A: &str = "00000000-0000-0000-0000-0000000000e1";
const CASCADE_B: &str = "00000000-0000-0000-0000-0000000000e2";
const CASCADE_C: &str = "00000000-0000-0000-0000-0000000000e3";
const CASCADE_TABLES: [&str; 5] = ["shipments", "documents", "stops", "items", "item_notes"];

/// Rows of organization `org` per table of `CASCADE_TABLES`.
fn cascade_counts(c: &mut postgres::Client, org: &str) -> Vec<i64> {
    CASCADE_TABLES
        .iter()
        .map(|t| count_of(c, &format!("SELECT count(*) FROM {t} WHERE organization_id = '{org}'")))
        .collect()
}

/// The erasure record's rows per table of `CASCADE_TABLES`.
fn cascade_record(c: &mut postgres::Client, org: &str) -> Vec<i64> {
    CASCADE_TABLES
        .iter()
        .map(|t| {
            count_of(
                c,
                &format!(
                    "SELECT (rows_deleted->>'public.{t}')::bigint FROM tenancy.erasures
                      WHERE organization_id = '{org}' AND status = 'completed'"
                ),
            )
        })
        .collect()
}

/// Children whose every foreign key to a tenant table is ON DELETE CASCADE, and that nothing
/// references, lose their rows with their parent's batches (the key's own action), are counted
/// per table in the erasure record (from the transaction's statistics, or by counting when
/// track_counts is off), and come last in the erase order, where their own turn deletes what no
/// parent took (a NULL key). A child that something references, or whose key is NO ACTION, keeps
/// its own turn before its parent. The parent's batches shrink so that a batch's rows, the
/// children's included, stay within batch_size.
#[test]
fn cascaded_children_go_with_their_parents_batches_and_every_row_is_counted() {
    let mut c = fresh_db("lc_cascade");
    let mut ddl = String::from(
        "CREATE EXTENSION tenancy;
         CREATE TABLE shipments (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                                 organization_id uuid NOT NULL REFERENCES tenancy.organizations, ref text,
                                 UNIQUE (organization_id, id));
         CREATE TABLE documents (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                                 organization_id uuid NOT NULL REFERENCES tenancy.organizations, shipment_id bigint, kind text,
                                 FOREIGN KEY (organization_id, shipment_id) REFERENCES shipments (organization_id, id) ON DELETE CASCADE);
         CREATE INDEX ON documents (organization_id, shipment_id);
         CREATE TABLE stops (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                             organization_id uuid NOT NULL REFERENCES tenancy.organizations, shipment_id bigint NOT NULL,
                             FOREIGN KEY (organization_id, shipment_id) REFERENCES shipments (organization_id, id) ON DELETE CASCADE);
         CREATE INDEX ON stops (organization_id, shipment_id);
         CREATE TABLE items (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                             organization_id uuid NOT NULL REFERENCES tenancy.organizations, shipment_id bigint NOT NULL,
                             UNIQUE (organization_id, id),
                             FOREIGN KEY (organization_id, shipment_id) REFERENCES shipments (organization_id, id) ON DELETE CASCADE);
         CREATE TABLE item_notes (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                                  organization_id uuid NOT NULL REFERENCES tenancy.organizations, item_id bigint NOT NULL,
                                  FOREIGN KEY (organization_id, item_id) REFERENCES items (organization_id, id));",
    );
    for t in CASCADE_TABLES {
        ddl.push_str(&format!(
            "ALTER TABLE {t} OWNER TO lc_tables; SELECT tenancy.register_table('{t}'); SELECT tenancy.enable_isolation('{t}');"
        ));
    }
    c.batch_execute(&ddl).unwrap();
    for (i, org) in [CASCADE_A, CASCADE_B, CASCADE_C].iter().enumerate() {
        c.batch_execute(&format!(
            "SELECT tenancy.create_organization('Cascade {i}', 'cascade-{i}', id => '{org}');
             INSERT INTO shipments (organization_id, ref) SELECT '{org}', 'S' || g FROM generate_series(1, 60) g;
             INSERT INTO documents (organization_id, shipment_id, kind)
             SELECT '{org}', s.id, k FROM shipments s, unnest('{{invoice,packing}}'::text[]) k WHERE s.organization_id = '{org}';
             INSERT INTO documents (organization_id, shipment_id, kind) SELECT '{org}', NULL, 'loose' FROM generate_series(1, 5);
             INSERT INTO stops (organization_id, shipment_id)
             SELECT '{org}', s.id FROM shipments s, generate_series(1, 3) WHERE s.organization_id = '{org}';
             INSERT INTO items (organization_id, shipment_id) SELECT '{org}', s.id FROM shipments s WHERE s.organization_id = '{org}';
             INSERT INTO item_notes (organization_id, item_id) SELECT '{org}', i.id FROM items i WHERE i.organization_id = '{org}';"
        ))
        .unwrap();
    }
    c.batch_execute("ANALYZE").unwrap();
    let expected = vec![60, 125, 180, 60, 60];
    assert_eq!(cascade_counts(&mut c, CASCADE_A), expected);

    let cascaded: Vec<(String, bool)> = c
        .query(
            "SELECT t::text, tenancy._erase_cascaded(t) FROM unnest(tenancy._erase_order()) WITH ORDINALITY u(t, n) ORDER BY n",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let names: Vec<&str> = cascaded.iter().map(|(t, _)| t.as_str()).collect();
    let at = |t: &str| names.iter().position(|n| *n == t).unwrap();
    assert!(at("item_notes") < at("items") && at("items") < at("shipments"), "children before parents: {names:?}");
    assert_eq!(
        names[3..].iter().copied().collect::<std::collections::BTreeSet<_>>(),
        ["documents", "stops"].into_iter().collect(),
        "the cascaded children last: {names:?}"
    );
    for (t, is) in &cascaded {
        assert_eq!(*is, t == "documents" || t == "stops", "{t}: cascaded {is}");
    }

    // A, in batches of 20: the shipments' batches shrink to ~20 / (1 + 305/60) = 3 shipments.
    let notices = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = notices.clone();
    let mut cfg: postgres::Config =
        format!("host=127.0.0.1 port={} user=postgres dbname=lc_cascade", port()).parse().unwrap();
    cfg.notice_callback(move |n| sink.lock().unwrap().push(n.message().to_owned()));
    let mut eraser = cfg.connect(postgres::NoTls).unwrap();
    let b_before = cascade_counts(&mut c, CASCADE_B);
    // One statement per message: CALL commits, which it cannot in a multi-statement message.
    eraser.batch_execute(&format!("SELECT tenancy.deactivate_organization('{CASCADE_A}')")).unwrap();
    eraser.batch_execute(&format!("CALL tenancy.erase_organization('{CASCADE_A}', batch_size => 20)")).unwrap();
    assert_eq!(cascade_counts(&mut c, CASCADE_A), vec![0; 5], "no row of A left");
    assert_eq!(cascade_counts(&mut c, CASCADE_B), b_before, "B unchanged");
    assert_eq!(cascade_record(&mut c, CASCADE_A), expected, "the record counts every row per table");
    let notices = notices.lock().unwrap().clone();
    let shipment_batches: Vec<&String> = notices.iter().filter(|n| n.contains(": public.shipments ")).collect();
    assert!(shipment_batches.len() >= 15, "the shipments' batches shrink: {shipment_batches:#?}");
    assert!(
        shipment_batches
            .iter()
            .any(|n| n.contains("rows of public.documents with them") && n.contains("rows of public.stops with them")),
        "a shipments batch reports its children's rows: {shipment_batches:#?}"
    );
    for n in &notices {
        let with: i64 = n
            .split(", ")
            .filter_map(|p| p.strip_suffix(" with them"))
            .filter_map(|p| p.split(' ').next()?.parse::<i64>().ok())
            .sum();
        assert!(with <= 20, "a batch of at most 20 rows, the children's included: {n}");
    }
    let documents_turn: Vec<&String> = notices.iter().filter(|n| n.contains(": public.documents ")).collect();
    assert!(
        documents_turn.iter().any(|n| n.contains("public.documents 125 rows deleted (done)")),
        "documents' own turn takes the 5 rows without a shipment: {documents_turn:#?}"
    );

    // B with track_counts off: the children's rows are counted by counting.
    eraser.batch_execute("SET track_counts = off").unwrap();
    eraser.batch_execute(&format!("SELECT tenancy.deactivate_organization('{CASCADE_B}')")).unwrap();
    eraser.batch_execute(&format!("CALL tenancy.erase_organization('{CASCADE_B}', batch_size => 20)")).unwrap();
    assert_eq!(cascade_counts(&mut c, CASCADE_B), vec![0; 5], "no row of B left");
    assert_eq!(cascade_record(&mut c, CASCADE_B), expected, "the record counts every row per table, track_counts off");
    assert_eq!(cascade_counts(&mut c, CASCADE_C), expected, "C unchanged");
    println!(
        "lifecycle: cascaded children erased with their parents' batches ({} shipments batches of at most 20 rows), \
         every row counted per table, with and without track_counts",
        shipment_batches.len()
    );
}
