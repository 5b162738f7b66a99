//! tenancy on a real Citus cluster: a coordinator and two workers started by this test (issue 18).
//!
//! Runs only where Citus is installed (`citus.so` in `pg_config --pkglibdir` of the PostgreSQL in
//! TENANCY_CITUS_PG_BIN, default /usr/lib/postgresql/15/bin, which must have tenancy installed);
//! elsewhere it prints `citus: skipped (...)` and passes. Ports TENANCY_CITUS_PORT (default 28830)
//! and the next two; data under TENANCY_CITUS_DATA (default /tmp/tenancy-citus-tests). The nodes are stopped at the end.
//!
//! What it checks, in a database where tenancy was installed by a superuser and in one where the
//! database's (non-superuser) owner installed it:
//! * distribute_all: the catalog as reference tables, tenant tables (uuid and slug, a parent and
//!   a child) distributed and co-located;
//! * an isolation matrix: member / viewer / non-member / no context / forged context / another
//!   user's context x SELECT / INSERT / UPDATE / DELETE / moving a row to another organization,
//!   on both tables and a parent/child join; every case counts, and a leak fails the test;
//! * the catalog on the workers (a join with tenancy.organizations), create_organization with an
//!   owner, an organization created after distribution;
//! * a revocation seen by the next statement on every node;
//! * a tenant-scoped query routed to a single shard;
//! * no membership memo on a coordinator without placements of the catalog (item 4);
//! * a context replayed through assign_distributed_transaction_id stops verifying after
//!   CONTEXT_MAX_AGE_SECONDS (item 8).
//! * the tenant lifecycle on distributed tables: usage, export, clone, erase and import where the
//!   tables' owner bypasses row-level security; each refused (0A000, nothing changed) where it
//!   does not, since the workers' policies do not see the lifecycle's scope.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

const ORG_A: &str = "00000000-0000-0000-0000-00000000000a";
const ORG_B: &str = "00000000-0000-0000-0000-00000000000b";
const ORG_C: &str = "00000000-0000-0000-0000-00000000000c";
const USER_A: &str = "aaaaaaaa-0000-0000-0000-000000000001"; // owner of A
const USER_B: &str = "bbbbbbbb-0000-0000-0000-000000000002"; // owner of B
const USER_V: &str = "cccccccc-0000-0000-0000-000000000003"; // viewer of A
const USER_C: &str = "dddddddd-0000-0000-0000-000000000004"; // owner of C (created after distribution)
const USER_N: &str = "eeeeeeee-0000-0000-0000-000000000005"; // invited to C after distribution
/// The expiry of a signed context on Citus (src/citus.rs, CONTEXT_MAX_AGE_SECONDS).
const CONTEXT_MAX_AGE_SECONDS: u64 = 60;

fn pg_bin() -> PathBuf {
    PathBuf::from(
        std::env::var("TENANCY_CITUS_PG_BIN")
            .or_else(|_| std::env::var("TENANCY_PG_BIN"))
            .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
    )
}

fn base_port() -> u16 {
    std::env::var("TENANCY_CITUS_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(28830)
}

fn root() -> String {
    std::env::var("TENANCY_CITUS_DATA").unwrap_or_else(|_| {
        format!("{}/tenancy-citus-tests", std::env::var("TENANCY_TMP").unwrap_or_else(|_| "/tmp".into()))
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Run a PostgreSQL program (as "postgres" when we are root: initdb and the server refuse root).
fn as_pg(program: &Path, args: &[&str]) -> std::process::Output {
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    c.args(args).env("RUST_BACKTRACE", "0");
    c.output().unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

/// The three nodes; stopped when dropped (also when a check fails).
struct Cluster {
    dirs: Vec<String>,
}

impl Cluster {
    fn start(key: &str) -> Cluster {
        let bin = pg_bin();
        let mut dirs = Vec::new();
        for i in 0..3u16 {
            let dir = format!("{}/node{i}", root());
            let data = format!("{dir}/data");
            if Path::new(&data).exists() {
                as_pg(&bin.join("pg_ctl"), &["-D", &data, "-m", "immediate", "-w", "stop"]);
            }
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            if is_root() {
                Command::new("chown").args(["-R", "postgres:postgres", &root()]).status().unwrap();
            }
            let out = as_pg(
                &bin.join("initdb"),
                &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"],
            );
            assert!(out.status.success(), "initdb {data}: {}", String::from_utf8_lossy(&out.stderr));
            let conf = format!(
                "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\nfsync = off\n\
                 max_connections = 200\nshared_preload_libraries = 'citus'\n",
                base_port() + i
            );
            let mut text = std::fs::read_to_string(format!("{data}/postgresql.conf")).unwrap();
            text.push_str(&conf);
            std::fs::write(format!("{data}/postgresql.conf"), text).unwrap();
            // The same key on every node, readable by the server's OS user only.
            let key_path = format!("{data}/tenancy_context.key");
            std::fs::write(&key_path, format!("{key}\n")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
            if is_root() {
                Command::new("chown").args(["-R", "postgres:postgres", &dir]).status().unwrap();
            }
            let log = format!("{dir}/server.log");
            let out = as_pg(&bin.join("pg_ctl"), &["-D", &data, "-l", &log, "-w", "start"]);
            assert!(out.status.success(), "start {data}: {}", std::fs::read_to_string(&log).unwrap_or_default());
            dirs.push(dir);
        }
        Cluster { dirs }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for dir in &self.dirs {
            as_pg(&pg_bin().join("pg_ctl"), &["-D", &format!("{dir}/data"), "-m", "fast", "-w", "stop"]);
        }
    }
}

fn connect(node: u16, user: &str, db: &str) -> Client {
    let conn = format!("host=127.0.0.1 port={} user={user} dbname={db}", base_port() + node);
    Client::connect(&conn, NoTls).unwrap_or_else(|e| panic!("connect {conn}: {e}"))
}

fn sqlstate<T>(r: Result<T, postgres::Error>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.code().map(|c| c.code().to_string()).unwrap_or_else(|| format!("no sqlstate: {e}")),
    }
}

fn err_text<T: std::fmt::Debug>(r: Result<T, postgres::Error>) -> String {
    match r {
        Ok(v) => format!("ok: {v:?}"),
        Err(e) => match e.as_db_error() {
            Some(d) => format!("{} {} (hint: {:?})", d.code().code(), d.message(), d.hint()),
            None => e.to_string(),
        },
    }
}

/// A login role on every node (roles are per node; Citus connects to the workers as the user).
fn role_everywhere(name: &str) {
    for node in 0..3 {
        connect(node, "postgres", "postgres")
            .batch_execute(&format!(
                "DO $$ BEGIN CREATE ROLE \"{name}\" LOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;"
            ))
            .unwrap();
    }
}

/// Database `db` owned by `owner` on every node, with citus; the workers added on the
/// coordinator (and the coordinator registered, unless `register_coordinator` is false); tenancy
/// installed by `installer` on each worker (DDL propagation off there), then on the coordinator.
fn citus_db(db: &str, owner: &str, installer: &str, register_coordinator: bool) {
    for node in [2, 1, 0] {
        let mut su = connect(node, "postgres", "postgres");
        su.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")).unwrap();
        su.batch_execute(&format!("CREATE DATABASE \"{db}\" OWNER \"{owner}\"")).unwrap();
        connect(node, "postgres", db).batch_execute("CREATE EXTENSION citus").unwrap();
    }
    let mut c = connect(0, "postgres", db);
    if register_coordinator {
        c.execute("SELECT pg_catalog.citus_set_coordinator_host('127.0.0.1', $1)", &[&i32::from(base_port())]).unwrap();
    }
    for w in 1..3 {
        c.execute("SELECT pg_catalog.citus_add_node('127.0.0.1', $1)", &[&i32::from(base_port() + w)]).unwrap();
    }
    for node in [1, 2] {
        connect(node, installer, db)
            .batch_execute("SET citus.enable_ddl_propagation TO off; CREATE EXTENSION tenancy;")
            .unwrap_or_else(|e| {
                panic!("CREATE EXTENSION tenancy on worker {node} as {installer}: {}", err_text::<()>(Err(e)))
            });
    }
    connect(0, installer, db).batch_execute("CREATE EXTENSION tenancy").unwrap_or_else(|e| {
        panic!("CREATE EXTENSION tenancy on the coordinator as {installer}: {}", err_text::<()>(Err(e)))
    });
}

/// Counts of the isolation matrix.
#[derive(Default)]
struct Tally {
    cases: usize,
    leaks: Vec<String>,
}

impl Tally {
    /// One case: `ok` is whether the outcome is the allowed one; `leak` whether it let through
    /// something it must not.
    fn case(&mut self, what: &str, ok: bool, detail: String) {
        self.cases += 1;
        if !ok {
            self.leaks.push(format!("{what}: {detail}"));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Member,
    Viewer,
    NonMember,
    NoContext,
    Forged,
    OtherUsersToken,
}

/// The opening of a transaction for `who`, as the application role, acting on organization A.
/// `token_of_a` is a context set_organization signed for USER_A in another transaction.
fn open_as(c: &mut postgres::Transaction<'_>, who: Who, token_of_a: &str) {
    let user = match who {
        Who::Member | Who::NoContext => USER_A,
        Who::Viewer => USER_V,
        Who::NonMember | Who::Forged | Who::OtherUsersToken => USER_B,
    };
    c.batch_execute(&format!("SET LOCAL tenancy.user_id = '{user}'")).unwrap();
    match who {
        Who::Member | Who::Viewer => {
            c.execute("SELECT tenancy.set_organization($1::text::uuid)", &[&ORG_A]).unwrap();
        }
        Who::NonMember => {
            // Its own organization: the rows of A must stay out of reach.
            c.execute("SELECT tenancy.set_organization($1::text::uuid)", &[&ORG_B]).unwrap();
        }
        Who::NoContext => {}
        Who::Forged | Who::OtherUsersToken => {
            // A legitimate context of B, then the setting replaced with a context for A: forged
            // (A's prefix with B's MAC), or USER_A's token (made for another user).
            c.execute("SELECT tenancy.set_organization($1::text::uuid)", &[&ORG_B]).unwrap();
            let mine: String = c.query_one("SELECT current_setting('tenancy.context')", &[]).unwrap().get(0);
            let value = if who == Who::Forged {
                let mac = mine.rsplit_once(':').unwrap().1.to_string();
                format!("v1:{ORG_A}:org-a:rwd:{mac}")
            } else {
                token_of_a.to_string()
            };
            c.batch_execute(&format!("SET LOCAL tenancy.context = '{value}'")).unwrap();
        }
    }
}

struct TenantTable {
    name: &'static str,
    col: &'static str,
    a: &'static str,
    b: &'static str,
    /// a new row of A and of B (VALUES list after the tenant column)
    key: &'static str,
    new_key: &'static str,
}

/// The isolation matrix on one table: `who` x SELECT / INSERT / UPDATE / DELETE / move.
fn matrix(app: &mut Client, t: &TenantTable, token_of_a: &str, tally: &mut Tally) {
    for who in [Who::Member, Who::Viewer, Who::NonMember, Who::NoContext, Who::Forged, Who::OtherUsersToken] {
        let (read, write, delete) = match who {
            Who::Member => (true, true, true),
            Who::Viewer => (true, false, false),
            _ => (false, false, false),
        };
        let label = |op: &str| format!("{} {who:?} {op}", t.name);
        // SELECT: the rows of A (and never those of B).
        {
            let mut tx = app.transaction().unwrap();
            open_as(&mut tx, who, token_of_a);
            let r = tx.query_one(
                &format!(
                    "SELECT count(*) FILTER (WHERE {c}::text = $1), count(*) FILTER (WHERE {c}::text <> $1) FROM {n}",
                    c = t.col,
                    n = t.name
                ),
                &[&t.a],
            );
            match r {
                Ok(row) => {
                    let (of_a, others): (i64, i64) = (row.get(0), row.get(1));
                    let expected_a = if read { 2 } else { 0 };
                    let others_ok = others == 0 || (who == Who::NonMember && others == 2);
                    tally.case(
                        &label("SELECT"),
                        of_a == expected_a && others_ok,
                        format!("saw {of_a} rows of A, {others} others"),
                    );
                }
                Err(e) => tally.case(&label("SELECT"), false, err_text::<()>(Err(e))),
            }
            tx.rollback().unwrap();
        }
        // INSERT into A.
        {
            let mut tx = app.transaction().unwrap();
            open_as(&mut tx, who, token_of_a);
            let col_type = if t.col == "org_slug" { "text" } else { "uuid" };
            let r =
                tx.execute(&format!("INSERT INTO {} VALUES ($1::text::{col_type}, {})", t.name, t.new_key), &[&t.a]);
            let state = sqlstate(r);
            let ok = if write { state == "ok" } else { state == "42501" };
            tally.case(&label("INSERT"), ok, state);
            let _ = tx.rollback();
        }
        // UPDATE the rows of A.
        for (op, sql, allowed) in [
            ("UPDATE", format!("UPDATE {} SET {k} = {k} WHERE {c}::text = $1", t.name, k = t.key, c = t.col), write),
            ("DELETE", format!("DELETE FROM {} WHERE {c}::text = $1", t.name, c = t.col), delete),
        ] {
            let mut tx = app.transaction().unwrap();
            open_as(&mut tx, who, token_of_a);
            let r = tx.execute(&sql, &[&t.a]);
            match r {
                Ok(n) => tally.case(&label(op), if allowed { n == 2 } else { n == 0 }, format!("{n} rows")),
                Err(e) => tally.case(&label(op), false, err_text::<()>(Err(e))),
            }
            let _ = tx.rollback();
        }
        // Move a row of A to B (nobody may: the member of A is no member of B), and, for the
        // non-member, a row of its own B to A.
        {
            let mut tx = app.transaction().unwrap();
            open_as(&mut tx, who, token_of_a);
            let (from, to) = if who == Who::NonMember { (t.b, t.a) } else { (t.a, t.b) };
            let col_type = if t.col == "org_slug" { "text" } else { "uuid" };
            let r = tx.execute(
                &format!("UPDATE {n} SET {c} = $2::text::{col_type} WHERE {c}::text = $1", n = t.name, c = t.col),
                &[&from, &to],
            );
            let state = match r {
                Ok(0) => "0 rows".to_string(),
                Ok(n) => format!("{n} rows moved"),
                Err(e) => sqlstate::<()>(Err(e)),
            };
            // Citus refuses to change a distribution column (0A000); the policy refuses (42501);
            // or nothing matched: all keep the row where it was.
            let ok = matches!(state.as_str(), "0 rows" | "42501" | "0A000");
            tally.case(&label("move"), ok, state);
            let _ = tx.rollback();
        }
    }
}

/// The database, distributed: organizations A, B; USER_V viewer of A; projects (uuid, parent),
/// tasks (uuid, child, context mode), parts (slug, ON UPDATE CASCADE to the catalog).
fn scenario(db: &str, owner: &str, installer: &str, app: &str, tally: &mut Tally) {
    citus_db(db, owner, installer, true);
    let mut adm = connect(0, installer, db);
    adm.batch_execute(&format!(
        "SELECT tenancy.create_organization('Org A', 'org-a', '{ORG_A}', '{{}}', '{USER_A}');
         SELECT tenancy.create_organization('Org B', 'org-b', '{ORG_B}', '{{}}', '{USER_B}');
         SELECT tenancy.add_member('{ORG_A}', '{USER_V}', 'viewer');
         CREATE TABLE public.projects (organization_id uuid NOT NULL REFERENCES tenancy.organizations (id),
                                       id int NOT NULL, name text, PRIMARY KEY (organization_id, id));
         CREATE TABLE public.tasks (organization_id uuid NOT NULL, id int NOT NULL, project_id int NOT NULL, title text,
                                    PRIMARY KEY (organization_id, id),
                                    FOREIGN KEY (organization_id, project_id) REFERENCES public.projects (organization_id, id) ON DELETE CASCADE);
         CREATE TABLE public.parts (org_slug text NOT NULL REFERENCES tenancy.organizations (slug) ON UPDATE CASCADE,
                                    sku text NOT NULL, PRIMARY KEY (org_slug, sku));
         INSERT INTO public.projects VALUES ('{ORG_A}', 1, 'a1'), ('{ORG_A}', 2, 'a2'), ('{ORG_B}', 101, 'b1'), ('{ORG_B}', 102, 'b2');
         INSERT INTO public.tasks VALUES ('{ORG_A}', 1, 1, 't'), ('{ORG_A}', 2, 2, 't'), ('{ORG_B}', 101, 101, 't'), ('{ORG_B}', 102, 102, 't');
         INSERT INTO public.parts VALUES ('org-a', 'x1'), ('org-a', 'x2'), ('org-b', 'y1'), ('org-b', 'y2');
         SELECT tenancy.enable_isolation('public.projects');
         SELECT tenancy.enable_isolation('public.tasks', mode => 'context');
         SELECT tenancy.enable_isolation('public.parts', 'org_slug');
         GRANT USAGE ON SCHEMA public TO \"{app}\";
         GRANT SELECT, INSERT, UPDATE, DELETE ON public.projects, public.tasks, public.parts TO \"{app}\";"
    ))
    .unwrap_or_else(|e| panic!("{db}: setup: {}", err_text::<()>(Err(e))));

    // A table converted by the backfill to a slug tenant column (item 9: resumed by its name
    // alone, as the backfill's HINTs say), whose surrogate primary key distribute refuses with the
    // statement that fixes it (item 3), and whose foreign key to the slugs the backfill makes
    // ON UPDATE CASCADE, which distribute rebuilds (item 2).
    adm.batch_execute(
        "CREATE TABLE public.labels (id serial PRIMARY KEY, name text);
         INSERT INTO public.labels (name) VALUES ('x'), ('y');",
    )
    .unwrap();
    // (CALL on its own: a procedure that COMMITs cannot run inside a multi-statement string.)
    adm.batch_execute(&format!(
        "CALL tenancy.backfill('public.labels', '{ORG_A}', tenant_column => 'org_slug', column_type => 'text')"
    ))
    .unwrap_or_else(|e| panic!("{db}: backfill labels: {}", err_text::<()>(Err(e))));
    let pending: Vec<String> = adm
        .query(
            "SELECT statement FROM tenancy.pending_statements() WHERE table_name::regclass = 'public.labels'::regclass",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for st in &pending {
        adm.batch_execute(st).unwrap_or_else(|e| panic!("{db}: {st}: {}", err_text::<()>(Err(e))));
    }
    let r = adm.batch_execute("CALL tenancy.backfill('public.labels')");
    tally.case("a slug backfill resumed by the table's name alone", r.is_ok(), err_text(r));
    let r = adm.query("SELECT tenancy.distribution_plan('public.labels')", &[]);
    let refused = match &r {
        Err(e) => e.as_db_error().map(|d| {
            d.code().code() == "42P16" && d.message().contains("ADD CONSTRAINT labels_pkey PRIMARY KEY (org_slug, id)")
        }),
        Ok(_) => None,
    };
    tally.case("distribute names the fix of a surrogate primary key", refused == Some(true), err_text(r));
    adm.batch_execute(
        "ALTER TABLE public.labels DROP CONSTRAINT labels_pkey, ADD CONSTRAINT labels_pkey PRIMARY KEY (org_slug, id);
         SELECT tenancy.enable_isolation('public.labels', 'org_slug');",
    )
    .unwrap_or_else(|e| panic!("{db}: labels: {}", err_text::<()>(Err(e))));
    let cascade: i64 = adm
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.labels'::regclass AND contype = 'f' AND confupdtype = 'c'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(cascade, 1, "{db}: the backfill made the slug key ON UPDATE CASCADE");

    if installer != "postgres" {
        // The catalog's shards go into schema tenancy, which only the superuser may write to.
        let r = adm.query("SELECT * FROM tenancy.distribute_all()", &[]);
        let state = sqlstate(r);
        tally.case("distribute_all by a non-superuser owner refuses (catalog)", state == "42501", state);
    }
    let ran: Vec<String> = connect(0, "postgres", db)
        .query("SELECT * FROM tenancy.distribute_all()", &[])
        .unwrap_or_else(|e| panic!("{db}: distribute_all: {}", err_text::<()>(Err(e))))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(ran.iter().any(|s| s.contains("create_reference_table('tenancy.memberships')")), "{ran:?}");
    assert!(
        ran.iter().any(|s| s.contains("ON UPDATE") || s.contains("parts_org_slug_fkey")),
        "the cascading slug key is rebuilt: {ran:?}"
    );
    let kinds: Vec<(String, String)> = adm
        .query("SELECT logicalrelid::text, partmethod::text || repmodel::text FROM pg_dist_partition ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (rel, kind) in [
        ("tenancy.memberships", "nt"),
        ("tenancy.organizations", "nt"),
        ("tenancy.roles", "nt"),
        ("tenancy.invitations", "nt"),
        ("projects", "hs"),
        ("tasks", "hs"),
        ("parts", "hs"),
    ] {
        assert!(kinds.contains(&(rel.to_string(), kind.to_string())), "{db}: {rel} as {kind}: {kinds:?}");
    }
    let rows: i64 = connect(0, "postgres", db)
        .query_one(
            "SELECT (SELECT count(*) FROM projects) + (SELECT count(*) FROM tasks) + (SELECT count(*) FROM parts)",
            &[],
        )
        .unwrap()
        .get(0);
    tally.case("every row kept by distribute_all", rows == 12, format!("{rows} of 12 rows"));
    let colocated: i64 = adm
        .query_one(
            "SELECT count(DISTINCT colocationid) FROM pg_dist_partition WHERE logicalrelid IN ('projects'::regclass, 'tasks'::regclass)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(colocated, 1, "{db}: parent and child co-located");
    let logged: i64 = adm
        .query_one(
            "SELECT count(*) FROM tenancy.migration_log WHERE operation = 'distribute' AND status = 'succeeded'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(logged >= 1, "{db}: distribute writes to migration_log");

    // A context signed for USER_A in another transaction (for the "another user's token" cases).
    let mut app_c = connect(0, app, db);
    let token_of_a: String = {
        let mut tx = app_c.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
        tx.execute("SELECT tenancy.set_organization($1::text::uuid)", &[&ORG_A]).unwrap();
        let t: String = tx.query_one("SELECT current_setting('tenancy.context')", &[]).unwrap().get(0);
        tx.commit().unwrap();
        t
    };

    for t in [
        TenantTable { name: "projects", col: "organization_id", a: ORG_A, b: ORG_B, key: "id", new_key: "3, 'a3'" },
        TenantTable { name: "tasks", col: "organization_id", a: ORG_A, b: ORG_B, key: "id", new_key: "3, 1, 'new'" },
        TenantTable { name: "parts", col: "org_slug", a: "org-a", b: "org-b", key: "sku", new_key: "'x3'" },
    ] {
        matrix(&mut app_c, &t, &token_of_a, tally);
    }

    // Parent/child join (co-located), and a join with the catalog (reference table) on the workers.
    for who in [Who::Member, Who::Viewer, Who::NonMember, Who::NoContext, Who::Forged, Who::OtherUsersToken] {
        let mut tx = app_c.transaction().unwrap();
        open_as(&mut tx, who, &token_of_a);
        let expected: i64 = match who {
            Who::Member | Who::Viewer => 2,
            Who::NonMember => 2, // its own B rows, never A's
            _ => 0,
        };
        for (what, sql) in [
            (
                "join projects/tasks",
                "SELECT count(*), count(*) FILTER (WHERE p.organization_id <> $1::text::uuid AND $2) FROM tasks t \
                   JOIN projects p ON p.organization_id = t.organization_id AND p.id = t.project_id",
            ),
            (
                "join projects/organizations",
                "SELECT count(*), count(*) FILTER (WHERE o.id <> $1::text::uuid AND $2) FROM projects p \
                   JOIN tenancy.organizations o ON o.id = p.organization_id",
            ),
        ] {
            let not_b = who != Who::NonMember;
            let r = tx.query_one(sql, &[&ORG_A, &not_b]);
            match r {
                Ok(row) => {
                    let (n, foreign): (i64, i64) = (row.get(0), row.get(1));
                    tally.case(
                        &format!("{what} {who:?}"),
                        n == expected && foreign == 0,
                        format!("{n} rows, {foreign} of B"),
                    );
                }
                Err(e) => tally.case(&format!("{what} {who:?}"), false, err_text::<()>(Err(e))),
            }
        }
        tx.rollback().unwrap();
    }

    // Two statements and set_organization twice in one transaction: the second choice wins.
    {
        let mut tx = app_c.transaction().unwrap();
        open_as(&mut tx, Who::Member, &token_of_a);
        let a: i64 = tx.query_one("SELECT count(*) FROM projects", &[]).unwrap().get(0);
        tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_B}'")).unwrap();
        tx.execute("SELECT tenancy.set_organization($1::text::uuid)", &[&ORG_B]).unwrap();
        let b: Vec<String> = tx
            .query("SELECT DISTINCT organization_id::text FROM projects", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        tally.case("set_organization twice", a == 2 && b == vec![ORG_B.to_string()], format!("{a} then {b:?}"));
        tx.rollback().unwrap();
    }

    // The JWT's organization claim and the user's default organization reach distributed tables
    // through set_organization() without argument (PostgREST's db-pre-request), which signs them;
    // before that call they give no rows there (fail closed); a claim the user may not act in is refused.
    for (what, setup) in [
        (
            "JWT organization claim",
            format!(
                "SELECT set_config('request.jwt.claims', '{{\"sub\": \"{USER_A}\", \"organization_id\": \"{ORG_A}\"}}', true)"
            ),
        ),
        ("default organization", format!("SET LOCAL tenancy.user_id = '{USER_A}'")),
    ] {
        let mut tx = app_c.transaction().unwrap();
        tx.batch_execute(&setup).unwrap();
        let before: i64 = tx.query_one("SELECT count(*) FROM projects", &[]).unwrap().get(0);
        let chosen: Option<String> = tx.query_one("SELECT tenancy.set_organization()::text", &[]).unwrap().get(0);
        let after: Vec<String> =
            tx.query("SELECT organization_id::text FROM projects", &[]).unwrap().iter().map(|r| r.get(0)).collect();
        let ok = before == 0 && chosen.as_deref() == Some(ORG_A) && after.len() == 2 && after.iter().all(|o| o == ORG_A);
        tally.case(
            &format!("{what} through set_organization()"),
            ok,
            format!("{before} rows before, chose {chosen:?}, then {after:?}"),
        );
        tx.rollback().unwrap();
    }
    {
        let mut tx = app_c.transaction().unwrap();
        tx.batch_execute(&format!(
            "SELECT set_config('request.jwt.claims', '{{\"sub\": \"{USER_B}\", \"organization_id\": \"{ORG_A}\"}}', true)"
        ))
        .unwrap();
        let state = sqlstate(tx.query_one("SELECT tenancy.set_organization()", &[]));
        tally.case("set_organization() with a claim of another organization", state == "42501", state);
    }

    // Routed to one shard: a tenant-scoped query, and the policy's own condition.
    {
        let mut tx = app_c.transaction().unwrap();
        open_as(&mut tx, Who::Member, &token_of_a);
        let plan = |tx: &mut postgres::Transaction<'_>, sql: &str| -> String {
            tx.query(&format!("EXPLAIN (COSTS OFF) {sql}"), &[])
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let scoped = plan(&mut tx, &format!("SELECT * FROM projects WHERE organization_id = '{ORG_A}'"));
        tally.case("tenant-scoped query routed to one shard", scoped.contains("Task Count: 1"), scoped.clone());
        let policy_only = plan(&mut tx, "SELECT * FROM projects");
        println!(
            "citus: {db}: a query without a tenant condition, through the policy alone: {}",
            policy_only.lines().find(|l| l.contains("Task Count")).unwrap_or("(no task count)").trim()
        );
        tx.rollback().unwrap();
    }

    // The catalog after distribution: an organization with an owner (no subquery in INSERT).
    let r = adm
        .batch_execute(&format!("SELECT tenancy.create_organization('Org C', 'org-c', '{ORG_C}', '{{}}', '{USER_C}')"));
    tally.case("create_organization with an owner after distribution", r.is_ok(), err_text(r));
    // ... and an invitation accepted (also an INSERT into the memberships reference table).
    let accepted = (|| -> Result<String, postgres::Error> {
        let token: String = adm
            .query_one("SELECT tenancy.create_invitation($1::text::uuid, 'n@example.com', 'member')", &[&ORG_C])?
            .get(0);
        let mut tx = app_c.transaction()?;
        tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_N}'"))?;
        tx.query_one("SELECT tenancy.accept_invitation($1)", &[&token])?;
        tx.commit()?;
        let mut tx = app_c.transaction()?;
        tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_N}'"))?;
        let org: String = tx.query_one("SELECT tenancy.set_organization($1::text::uuid)::text", &[&ORG_C])?.get(0);
        tx.rollback()?;
        Ok(org)
    })();
    tally.case(
        "accept_invitation after distribution",
        matches!(&accepted, Ok(o) if o == ORG_C),
        match &accepted {
            Ok(o) => o.clone(),
            Err(e) => e.as_db_error().map(|d| format!("{} {}", d.code().code(), d.message())).unwrap_or(e.to_string()),
        },
    );

    // A tenant table added later, referring to the catalog: registered, isolated, distributed.
    let r = adm.batch_execute(&format!(
        "CREATE TABLE public.notes (organization_id uuid NOT NULL REFERENCES tenancy.organizations (id), id int NOT NULL,
                                    body text, PRIMARY KEY (organization_id, id));
         INSERT INTO public.notes VALUES ('{ORG_A}', 1, 'a'), ('{ORG_B}', 2, 'b');
         SELECT tenancy.enable_isolation('public.notes');
         SELECT tenancy.distribute('public.notes');
         GRANT SELECT ON public.notes TO \"{app}\";"
    ));
    let later = match r {
        Ok(()) => {
            let kind: String = adm
                .query_one(
                    "SELECT partmethod::text FROM pg_dist_partition WHERE logicalrelid = 'public.notes'::regclass",
                    &[],
                )
                .unwrap()
                .get(0);
            let mut tx = app_c.transaction().unwrap();
            open_as(&mut tx, Who::Member, &token_of_a);
            let seen: Vec<String> =
                tx.query("SELECT organization_id::text FROM notes", &[]).unwrap().iter().map(|r| r.get(0)).collect();
            tx.rollback().unwrap();
            let all: i64 =
                connect(0, "postgres", db).query_one("SELECT count(*) FROM public.notes", &[]).unwrap().get(0);
            (
                kind == "h" && seen == vec![ORG_A.to_string()],
                format!("{db}: partmethod {kind}, member of A sees {seen:?} of {all} rows"),
            )
        }
        Err(e) => (false, err_text::<()>(Err(e))),
    };
    tally.case("a tenant table created after distribute_all", later.0, later.1);

    // Item 7: once the catalog is distributed, the backfill of a new table is refused up front
    // (its foreign key would make Citus recreate the table under another oid mid-way).
    adm.batch_execute("CREATE TABLE public.later_plain (id int PRIMARY KEY, body text)").unwrap();
    let r = adm.batch_execute(&format!("CALL tenancy.backfill('public.later_plain', '{ORG_A}')"));
    let state = sqlstate(r);
    tally.case("backfill after distribute_all refused", state == "0A000", state);
    let labels: i64 = adm
        .query_one(
            "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = 'public.labels'::regclass AND partmethod = 'h'",
            &[],
        )
        .unwrap()
        .get(0);
    tally.case("the backfilled slug table is distributed", labels == 1, format!("{labels}"));

    // Revocation: the viewer's next statement, on every node, no longer acts in A.
    {
        let mut viewer = connect(0, app, db);
        let mut tx = viewer.transaction().unwrap();
        open_as(&mut tx, Who::Viewer, &token_of_a);
        let before: i64 = tx.query_one("SELECT count(*) FROM projects", &[]).unwrap().get(0);
        tx.commit().unwrap();
        assert_eq!(before, 2, "{db}: the viewer reads A before the revocation");
        adm.execute("SELECT tenancy.remove_member($1::text::uuid, $2::text::uuid)", &[&ORG_A, &USER_V]).unwrap();
        for node in 0..3u16 {
            // On the coordinator: the session that looked the viewer up before, and a new one;
            // on each worker (Citus with metadata on every node): a new session there.
            let mut clients = vec![connect(node, app, db)];
            if node == 0 {
                clients.push(std::mem::replace(&mut viewer, connect(0, app, db)));
            }
            for c in clients.iter_mut() {
                let mut tx = c.transaction().unwrap();
                tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_V}'")).unwrap();
                let r = tx.execute("SELECT tenancy.set_organization($1::text::uuid)", &[&ORG_A]);
                let state = sqlstate(r);
                tally.case(&format!("revoked viewer on node {node}"), state == "42501", state);
                let _ = tx.rollback();
                let mut tx = c.transaction().unwrap();
                tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_V}'")).unwrap();
                let n = tx.query_one("SELECT count(*) FROM projects", &[]).map(|r| r.get::<_, i64>(0));
                tally.case(
                    &format!("revoked viewer reads nothing on node {node}"),
                    matches!(n, Ok(0)),
                    format!("{n:?}"),
                );
                let _ = tx.rollback();
            }
        }
        drop(viewer);
    }
    lifecycle(db, installer, tally);
}

const ORG_COPY: &str = "00000000-0000-0000-0000-0000000000c1";
const ORG_EMPTY: &str = "00000000-0000-0000-0000-0000000000e0";

/// Rows of organization `org` (id `org`, slug `slug`) in the scenario's tenant tables, read by
/// the superuser (row-level security does not filter it): projects, tasks, parts, labels.
fn rows_of(su: &mut Client, org: &str, slug: &str) -> Vec<i64> {
    let r = su
        .query_one(
            "SELECT (SELECT count(*) FROM public.projects WHERE organization_id = $1::text::uuid),
                    (SELECT count(*) FROM public.tasks WHERE organization_id = $1::text::uuid),
                    (SELECT count(*) FROM public.parts WHERE org_slug = $2),
                    (SELECT count(*) FROM public.labels WHERE org_slug = $2)",
            &[&org, &slug],
        )
        .unwrap();
    (0..4).map(|i| r.get(i)).collect()
}

/// The tenant lifecycle on distributed tables. Where the tables' owner bypasses row-level
/// security (citus_su: a superuser installed tenancy and owns the tables): usage, an export of
/// organization B, a clone of B (every task of the clone on a project of the clone), the clone
/// exported, erased (verified, 0 rows left) and imported back from its export (same rows), and
/// erased again. Where it does not (citus_owner: the database's owner, not a superuser, owns the
/// tables under forced row-level security, which runs on the workers where the lifecycle's scope
/// does not reach): export, clone, erase and import are refused with 0A000 and change nothing,
/// instead of exporting or cloning nothing and "verifying" an erase that deleted nothing.
fn lifecycle(db: &str, installer: &str, tally: &mut Tally) {
    let mut adm = connect(0, installer, db);
    let mut su = connect(0, "postgres", db);
    let b = rows_of(&mut su, ORG_B, "org-b");
    let lines_of = |c: &mut Client, org: &str| -> Result<Vec<String>, postgres::Error> {
        Ok(c.query("SELECT line FROM tenancy.export_organization($1::text::uuid)", &[&org])?
            .iter()
            .map(|r| r.get(0))
            .collect())
    };
    let code = |r: Result<(), postgres::Error>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.as_db_error().map(|d| d.code().code().to_owned()).unwrap_or_else(|| e.to_string()),
    };
    if installer == "postgres" {
        let usage: i64 = adm
            .query_one(
                "SELECT coalesce(sum(rows), 0)::bigint FROM tenancy.organization_usage() WHERE organization_slug = 'org-b'",
                &[],
            )
            .unwrap()
            .get(0);
        let exported = lines_of(&mut adm, ORG_B);
        tally.case(
            &format!(
                "{db}: lifecycle: export of B on distributed tables ({} rows of B, usage {usage})",
                b.iter().sum::<i64>()
            ),
            matches!(&exported, Ok(l) if l.len() as i64 == usage + 2) && usage >= b.iter().sum::<i64>(),
            format!("{:?} lines", exported.as_ref().map(Vec::len)),
        );
        let r = adm
            .batch_execute(&format!(
                "CALL tenancy.clone_organization('{ORG_B}', 'Org B copy', 'org-b-copy', '{ORG_COPY}', batch_size => 1)"
            ))
            .map_err(|e| err_text::<()>(Err(e)));
        let copied = rows_of(&mut su, ORG_COPY, "org-b-copy");
        let outside: i64 = su
            .query_one(
                "SELECT count(*) FROM public.tasks t WHERE t.organization_id = $1::text::uuid
                    AND NOT EXISTS (SELECT 1 FROM public.projects p WHERE p.organization_id = t.organization_id AND p.id = t.project_id)",
                &[&ORG_COPY],
            )
            .unwrap()
            .get(0);
        tally.case(
            &format!("{db}: lifecycle: clone of B on distributed tables, every reference inside the clone"),
            r.is_ok() && copied == b && outside == 0 && rows_of(&mut su, ORG_B, "org-b") == b,
            format!("{r:?}; copied {copied:?} of {b:?}, {outside} outside"),
        );
        let export_of_copy = lines_of(&mut adm, ORG_COPY).unwrap_or_default();
        let r = adm.batch_execute(&format!("SELECT tenancy.deactivate_organization('{ORG_COPY}')")).and_then(|_| {
            adm.batch_execute(&format!("CALL tenancy.erase_organization('{ORG_COPY}', batch_size => 1)"))
        });
        let verified: Option<bool> = su
            .query_opt(
                "SELECT verified FROM tenancy.erasures WHERE organization_id = $1::text::uuid AND status = 'completed'",
                &[&ORG_COPY],
            )
            .unwrap()
            .map(|r| r.get(0));
        let left = rows_of(&mut su, ORG_COPY, "org-b-copy");
        tally.case(
            &format!("{db}: lifecycle: erase of the clone on distributed tables, verified, nothing left, B unchanged"),
            r.is_ok()
                && verified == Some(true)
                && left.iter().all(|n| *n == 0)
                && rows_of(&mut su, ORG_B, "org-b") == b,
            format!("{}; verified {verified:?}, left {left:?}", err_text(r)),
        );
        // The clone's export imported back (same ids), then erased again.
        su.batch_execute(
            "CREATE TABLE public.copy_export (n bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, line text)",
        )
        .unwrap();
        for line in &export_of_copy {
            su.execute("INSERT INTO public.copy_export (line) VALUES ($1)", &[line]).unwrap();
        }
        let r = adm.batch_execute("CALL tenancy.import_organization('public.copy_export', batch_size => 2)");
        let restored = rows_of(&mut su, ORG_COPY, "org-b-copy");
        tally.case(
            &format!("{db}: lifecycle: import of the clone's export on distributed tables"),
            r.is_ok() && restored == b && Some(export_of_copy.len()) == exported.as_ref().ok().map(Vec::len),
            format!("{}; restored {restored:?} of {b:?}, {} lines exported", err_text(r), export_of_copy.len()),
        );
        let r = adm
            .batch_execute(&format!("SELECT tenancy.deactivate_organization('{ORG_COPY}')"))
            .and_then(|_| adm.batch_execute(&format!("CALL tenancy.erase_organization('{ORG_COPY}')")));
        tally.case(
            &format!("{db}: lifecycle: the imported organization erased again"),
            r.is_ok() && rows_of(&mut su, ORG_COPY, "org-b-copy").iter().all(|n| *n == 0),
            err_text(r),
        );
        return;
    }
    // The tables' owner is under forced row-level security: every operation refused, nothing changed.
    let count_state = |su: &mut Client| -> i64 {
        su.query_one(
            "SELECT (SELECT count(*) FROM tenancy.organizations) + (SELECT count(*) FROM tenancy.clones)
                  + (SELECT count(*) FROM tenancy.erasures) + (SELECT count(*) FROM tenancy.imports)",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let before = count_state(&mut su);
    let r = lines_of(&mut adm, ORG_B).map(|_| ());
    let state = code(r);
    tally.case(
        &format!("{db}: lifecycle: export refused on distributed tables under forced RLS"),
        state == "0A000",
        state,
    );
    let r = adm.batch_execute(&format!(
        "CALL tenancy.clone_organization('{ORG_B}', 'Org B copy', 'org-b-copy', '{ORG_COPY}')"
    ));
    let state = code(r);
    tally.case(
        &format!("{db}: lifecycle: clone refused on distributed tables under forced RLS"),
        state == "0A000",
        state,
    );
    adm.batch_execute(&format!(
        "SELECT tenancy.create_organization('Empty', 'empty', '{ORG_EMPTY}'); SELECT tenancy.deactivate_organization('{ORG_EMPTY}');"
    ))
    .unwrap();
    let before_erase = count_state(&mut su);
    let r = adm.batch_execute(&format!("CALL tenancy.erase_organization('{ORG_EMPTY}')"));
    let state = code(r);
    tally.case(
        &format!("{db}: lifecycle: erase refused on distributed tables under forced RLS"),
        state == "0A000",
        state,
    );
    let header = su
        .query_one("SELECT line FROM tenancy.export_organization($1::text::uuid) LIMIT 1", &[&ORG_B])
        .unwrap()
        .get::<_, String>(0);
    su.batch_execute("CREATE TABLE public.b_export (n bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, line text)")
        .unwrap();
    let end = r#"{"end" : true, "rows" : {}}"#.to_owned();
    for line in [header.replace(ORG_B, "00000000-0000-0000-0000-0000000000f9").replace("\"org-b\"", "\"org-f9\""), end]
    {
        su.execute("INSERT INTO public.b_export (line) VALUES ($1)", &[&line]).unwrap();
    }
    su.batch_execute(&format!("ALTER TABLE public.b_export OWNER TO \"{installer}\"")).unwrap();
    let r = adm.batch_execute("CALL tenancy.import_organization('public.b_export')");
    let state = code(r);
    tally.case(
        &format!("{db}: lifecycle: import refused on distributed tables under forced RLS"),
        state == "0A000",
        state,
    );
    tally.case(
        &format!("{db}: lifecycle: the refusals changed nothing"),
        count_state(&mut su) == before_erase && before_erase == before + 1 && rows_of(&mut su, ORG_B, "org-b") == b,
        format!("{before} / {before_erase} / {}", count_state(&mut su)),
    );
}

/// Item 4: a coordinator that holds no placement of the catalog does not memoize, so a
/// revocation is seen by the next statement of a session that already looked the member up.
fn no_coordinator_placements(installer: &str, app: &str, tally: &mut Tally) {
    let db = "citus_no_coordinator";
    citus_db(db, installer, installer, false);
    let mut adm = connect(0, installer, db);
    adm.batch_execute(&format!(
        "SELECT tenancy.create_organization('Org A', 'org-a', '{ORG_A}', '{{}}', '{USER_A}');
         SELECT tenancy.add_member('{ORG_A}', '{USER_V}', 'viewer');
         CREATE TABLE public.projects (organization_id uuid NOT NULL REFERENCES tenancy.organizations (id),
                                       id int NOT NULL, PRIMARY KEY (organization_id, id));
         SELECT tenancy.enable_isolation('public.projects');
         GRANT SELECT ON public.projects TO \"{app}\";"
    ))
    .unwrap_or_else(|e| panic!("{db}: setup: {}", err_text::<()>(Err(e))));
    let mut su = connect(0, "postgres", db);
    let state = sqlstate(su.batch_execute("SELECT count(*) FROM tenancy.distribute_all()"));
    tally.case("distribute_all refuses without the coordinator registered", state == "55000", state);
    // The same statements run by hand (a DBA following distribution_plan()).
    su.batch_execute(
        "BEGIN;
         SET LOCAL citus.enable_unsafe_triggers = on;
         SET LOCAL citus.enable_local_reference_table_foreign_keys = off;
         DO $$ DECLARE s text; BEGIN
             FOR s IN SELECT * FROM tenancy.distribution_plan() LOOP EXECUTE s; END LOOP;
         END $$;
         COMMIT;",
    )
    .unwrap_or_else(|e| panic!("{db}: the plan by hand: {}", err_text::<()>(Err(e))));
    let placements: i64 =
        adm.query_one("SELECT count(*) FROM pg_dist_placement WHERE groupid = 0", &[]).unwrap().get(0);
    assert_eq!(placements, 0, "{db}: the coordinator holds no placement");
    let mut viewer = connect(0, app, db);
    let mut tx = viewer.transaction().unwrap();
    // The catalog is read on a worker here: the acting user must reach it.
    tx.batch_execute(&format!(
        "SET LOCAL citus.propagate_set_commands = 'local'; SET LOCAL tenancy.user_id = '{USER_V}'"
    ))
    .unwrap();
    tx.execute("SELECT tenancy.set_organization($1::text::uuid)", &[&ORG_A]).unwrap();
    let memo: i64 = tx.query_one("SELECT tenancy.lookup_cache_size()", &[]).unwrap().get(0);
    tx.commit().unwrap();
    tally.case("no memo without coordinator placements", memo == 0, format!("{memo} answers kept"));
    adm.execute("SELECT tenancy.remove_member($1::text::uuid, $2::text::uuid)", &[&ORG_A, &USER_V]).unwrap();
    let mut tx = viewer.transaction().unwrap();
    tx.batch_execute(&format!(
        "SET LOCAL citus.propagate_set_commands = 'local'; SET LOCAL tenancy.user_id = '{USER_V}'"
    ))
    .unwrap();
    let state = sqlstate(tx.execute("SELECT tenancy.set_organization($1::text::uuid)", &[&ORG_A]));
    tally.case("revocation seen without coordinator placements", state == "42501", state);
}

/// Item 8: a saved context, replayed in a new transaction that took the old distributed
/// transaction id with assign_distributed_transaction_id.
struct Saved {
    token: String,
    id: (i32, i64, String),
    at: Instant,
}

fn save_context(db: &str, app: &str) -> Saved {
    let mut c = connect(0, app, db);
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
    tx.execute("SELECT tenancy.set_organization($1::text::uuid)", &[&ORG_A]).unwrap();
    let token: String = tx.query_one("SELECT current_setting('tenancy.context')", &[]).unwrap().get(0);
    let row = tx
        .query_one(
            "SELECT initiator_node_identifier, transaction_number::int8, transaction_stamp::text FROM get_current_transaction_id()",
            &[],
        )
        .unwrap();
    let id = (row.get(0), row.get(1), row.get(2));
    tx.commit().unwrap();
    Saved { token, id, at: Instant::now() }
}

/// The rows of A a replay of `s` shows (or the error).
fn replay(db: &str, app: &str, s: &Saved) -> Result<i64, String> {
    let mut c = connect(0, app, db);
    let mut tx = c.transaction().map_err(|e| e.to_string())?;
    tx.execute("SELECT assign_distributed_transaction_id($1, $2, $3::text::timestamptz)", &[&s.id.0, &s.id.1, &s.id.2])
        .map_err(|e| err_text::<()>(Err(e)))?;
    tx.batch_execute(&format!(
        "SET LOCAL citus.propagate_set_commands = 'local'; SET LOCAL tenancy.user_id = '{USER_A}'; SET LOCAL tenancy.context = '{}'",
        s.token
    ))
    .map_err(|e| err_text::<()>(Err(e)))?;
    let n = tx
        .query_one("SELECT count(*) FROM projects WHERE organization_id = $1::text::uuid", &[&ORG_A])
        .map(|r| r.get::<_, i64>(0))
        .map_err(|e| err_text::<()>(Err(e)));
    let _ = tx.rollback();
    n
}

fn citus_so() -> Option<PathBuf> {
    let out = Command::new(pg_bin().join("pg_config")).arg("--pkglibdir").output().ok()?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Some(Path::new(&dir).join("citus.so"))
}

#[test]
fn tenancy_on_a_citus_cluster() {
    let so = citus_so().unwrap_or_else(|| PathBuf::from("citus.so"));
    if !so.exists() {
        println!(
            "citus: skipped (no citus.so in {})",
            so.parent().map(|p| p.display().to_string()).unwrap_or_default()
        );
        return;
    }
    let key: String = (0..32).map(|i| format!("{:02x}", (i * 37 + 11) % 256)).collect();
    let _cluster = Cluster::start(&key);
    let app = "citus_app";
    let owner = "citus_owner";
    for r in [app, owner] {
        role_everywhere(r);
    }
    let mut tally = Tally::default();
    // tenancy installed by a superuser, then by the database's owner (not a superuser).
    scenario("citus_su", "postgres", "postgres", app, &mut tally);
    let replayed = save_context("citus_su", app);
    // Within the expiry a replay verifies (the documented bound); checked again after it below.
    let early = replay("citus_su", app, &replayed);
    println!("citus: a context replayed {} s after it was signed: {early:?} rows of A (within the {CONTEXT_MAX_AGE_SECONDS} s bound)", replayed.at.elapsed().as_secs());
    scenario("citus_owner", owner, owner, app, &mut tally);
    no_coordinator_placements(owner, app, &mut tally);

    let wait = Duration::from_secs(CONTEXT_MAX_AGE_SECONDS + 2).saturating_sub(replayed.at.elapsed());
    if !wait.is_zero() {
        println!("citus: waiting {} s for the replay check", wait.as_secs());
        std::thread::sleep(wait);
    }
    let late = replay("citus_su", app, &replayed);
    tally.case(
        &format!(
            "context replayed after {} s through assign_distributed_transaction_id",
            replayed.at.elapsed().as_secs()
        ),
        matches!(late, Ok(0)),
        format!("{late:?}"),
    );

    println!("citus: {} cases, {} leaks", tally.cases, tally.leaks.len());
    for l in &tally.leaks {
        println!("citus: LEAK or failure: {l}");
    }
    assert!(tally.leaks.is_empty(), "{} of {} cases failed", tally.leaks.len(), tally.cases);
}
