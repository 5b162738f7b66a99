//! The attackers of a managed (Supabase-style) install, played over real connections.
//!
//! Each case is an attack; it *succeeds* when the attacker gets something the security model
//! says they cannot have (a superuser bit, a grant, another organization's rows, a lasting
//! membership, SQL of theirs run by somebody else, a Rust panic). The suite runs every case,
//! prints one line per case and then `attacks: N cases, K succeeded`, and fails unless K is 0.
//!
//! Who attacks:
//! * `mallory_owner`: a database owner who is not superuser, before and after CREATE EXTENSION
//!   (on a managed install the extension is trusted: its script runs as the bootstrap superuser);
//! * `mallory`: a table owner who is not a tenancy administrator;
//! * members, viewers, non-members and `anon` of PostgREST-style roles;
//! * anybody who wants an administrator's report, fix or `\gexec` to run their SQL.
//!
//! `the_suite_catches_a_planted_weakness` shows that the checks can fail: it plants weaknesses
//! and asserts that the same checks report the attack as successful.
use std::time::{Duration, Instant};

use postgres::Client;
use tenancy_client_tests::*;

const USER_N: &str = "ffffffff-0000-0000-0000-000000000006"; // member of nothing
const USER_AD: &str = "abababab-0000-0000-0000-000000000007"; // admin of A

/// The result of one attack: Ok = repelled, Err(what the attacker got).
type Outcome = Result<(), String>;

struct Suite {
    cases: usize,
    succeeded: Vec<String>,
}

impl Suite {
    fn new() -> Self {
        Suite { cases: 0, succeeded: Vec::new() }
    }

    fn case(&mut self, name: &str, attack: impl FnOnce() -> Outcome) {
        self.cases += 1;
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(attack))
            .unwrap_or_else(|p| Err(format!("the case itself broke: {}", panic_text(&p))));
        match outcome {
            Ok(()) => println!("attack {name} ... repelled ({} ms)", started.elapsed().as_millis()),
            Err(why) => {
                println!("attack {name} ... SUCCEEDED: {why}");
                self.succeeded.push(format!("{name}: {why}"));
            }
        }
    }

    fn finish(self) {
        println!("attacks: {} cases, {} succeeded", self.cases, self.succeeded.len());
        assert!(self.succeeded.is_empty(), "attacks that succeeded:\n{}", self.succeeded.join("\n"));
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

fn one_bool(c: &mut impl postgres::GenericClient, sql: &str) -> bool {
    c.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

fn one_i64(c: &mut impl postgres::GenericClient, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

fn is_superuser(role: &str) -> bool {
    one_bool(&mut superuser(), &format!("SELECT rolsuper FROM pg_roles WHERE rolname = '{role}'"))
}

fn demote(role: &str) {
    superuser().batch_execute(&format!("ALTER ROLE \"{role}\" NOSUPERUSER")).unwrap();
}

/// A fresh database owned by `owner` (not superuser) without the extension.
fn empty_db(db: &str, owner: &str) -> Client {
    role(owner, "");
    demote(owner);
    let mut su = superuser();
    su.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")).unwrap();
    su.batch_execute(&format!("CREATE DATABASE \"{db}\" OWNER \"{owner}\"")).unwrap();
    connect(owner, db)
}

/// A PL/pgSQL statement that makes `who` superuser when it runs as a superuser, and otherwise does
/// nothing: the payload of every planted function.
fn escalation(who: &str) -> String {
    format!(
        "IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) current_user) THEN
           EXECUTE 'ALTER ROLE \"{who}\" SUPERUSER';
         END IF;"
    )
}

/// Plants, in schema tenancy, the objects 0.2.0's scripts could be made to call: operators and
/// functions with argument types that beat pg_catalog's in overload resolution.
fn plant_in_tenancy_schema(c: &mut impl postgres::GenericClient, who: &str) {
    let e = escalation(who);
    c.batch_execute(&format!(
        "CREATE FUNCTION tenancy.evil_eq(a oid, b regnamespace) RETURNS boolean LANGUAGE plpgsql AS $f$
         BEGIN {e} RETURN a OPERATOR(pg_catalog.=) b::oid; END $f$;
         CREATE OPERATOR tenancy.= (LEFTARG = oid, RIGHTARG = regnamespace, FUNCTION = tenancy.evil_eq);
         CREATE FUNCTION tenancy.evil_eq(a oid, b oid) RETURNS boolean LANGUAGE plpgsql AS $f$
         BEGIN {e} RETURN a OPERATOR(pg_catalog.=) b; END $f$;
         CREATE OPERATOR tenancy.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = tenancy.evil_eq);
         CREATE FUNCTION tenancy.format(a text, b regprocedure) RETURNS text LANGUAGE plpgsql AS $f$
         BEGIN {e} RETURN pg_catalog.format(a, b); END $f$;
         CREATE FUNCTION tenancy.format(a text, b text) RETURNS text LANGUAGE plpgsql AS $f$
         BEGIN {e} RETURN pg_catalog.format(a, b); END $f$;
         CREATE FUNCTION tenancy._require(p_name text, p_value regclass) RETURNS regclass LANGUAGE plpgsql AS $f$
         BEGIN {e} RETURN p_value; END $f$;
         CREATE FUNCTION tenancy._backfill_step(p_rel regclass, OUT done boolean, OUT sleep double precision)
         LANGUAGE plpgsql AS $f$ BEGIN {e} done := true; sleep := 0; END $f$;"
    ))
    .unwrap();
}

fn msg(e: &postgres::Error) -> String {
    e.as_db_error().map(|d| format!("{}: {}", d.code().code(), d.message())).unwrap_or_else(|| e.to_string())
}

/// Plants a weakness (as the superuser) for `the_suite_catches_a_planted_weakness`; `{owner}`
/// stands for the database owner.
fn weaken(db: &str, plant: Option<&str>, owner: &str) {
    if let Some(sql) = plant {
        superuser_of(db).batch_execute(&sql.replace("{owner}", owner)).unwrap();
    }
}

fn expect_refused(r: Result<(), postgres::Error>, what: &str) -> Outcome {
    match r {
        Ok(()) => Err(format!("{what} was accepted")),
        Err(_) => Ok(()),
    }
}

fn not_superuser(who: &str) -> Outcome {
    if is_superuser(who) {
        demote(who);
        return Err(format!("{who} became superuser"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Install and upgrade
// ---------------------------------------------------------------------------------------------

fn install_into_planted_schema(db: &str, same_transaction: bool) -> Outcome {
    let owner = format!("{db}_owner");
    let mut c = empty_db(db, &owner);
    let r = if same_transaction {
        let mut tx = c.transaction().unwrap();
        tx.batch_execute("CREATE SCHEMA tenancy").unwrap();
        plant_in_tenancy_schema(&mut tx, &owner);
        let r = tx.batch_execute("CREATE EXTENSION tenancy");
        if r.is_ok() {
            tx.commit().unwrap();
        }
        r
    } else {
        c.batch_execute("CREATE SCHEMA tenancy").unwrap();
        plant_in_tenancy_schema(&mut c, &owner);
        c.batch_execute("CREATE EXTENSION tenancy")
    };
    not_superuser(&owner)?;
    expect_refused(r, "CREATE EXTENSION into a schema holding the owner's objects")
}

fn install_into_schema_with_grants(db: &str) -> Outcome {
    let owner = format!("{db}_owner");
    let mut c = empty_db(db, &owner);
    role("mallory", "");
    c.batch_execute(
        "CREATE SCHEMA tenancy; GRANT CREATE ON SCHEMA tenancy TO PUBLIC;
         ALTER DEFAULT PRIVILEGES IN SCHEMA tenancy GRANT EXECUTE ON FUNCTIONS TO mallory;",
    )
    .unwrap();
    let r = c.batch_execute("CREATE EXTENSION tenancy");
    if r.is_ok() {
        // If it was accepted, nobody but the extension may create objects in the schema.
        let created =
            connect("mallory", db).batch_execute("CREATE FUNCTION tenancy.x() RETURNS int LANGUAGE sql AS 'SELECT 1'");
        if created.is_ok() {
            return Err("PUBLIC kept CREATE on schema tenancy after CREATE EXTENSION".into());
        }
    }
    Ok(())
}

fn nobody_creates_objects_in_the_schema(db: &str, plant: Option<&str>) -> Outcome {
    let owner = format!("{db}_owner");
    let mut c = empty_db(db, &owner);
    c.batch_execute("CREATE EXTENSION tenancy").unwrap();
    weaken(db, plant, &owner);
    let attempts = [
        "CREATE FUNCTION tenancy._require(p_name text, p_value regclass) RETURNS regclass LANGUAGE sql AS 'SELECT $2'",
        "CREATE FUNCTION tenancy._backfill_step(p_rel regclass, OUT done boolean, OUT sleep double precision) LANGUAGE sql AS 'SELECT true, 0::float8'",
        "CREATE OPERATOR tenancy.= (LEFTARG = oid, RIGHTARG = regnamespace, FUNCTION = pg_catalog.oideq)",
        "CREATE TABLE tenancy.planted (x int)",
        "CREATE VIEW tenancy.planted_v AS SELECT 1",
        "CREATE TYPE tenancy.planted_t AS (x int)",
        "ALTER SCHEMA tenancy OWNER TO CURRENT_USER",
        "ALTER SCHEMA tenancy RENAME TO tenancy_old",
        "ALTER FUNCTION tenancy.current_user_id() OWNER TO CURRENT_USER",
        "ALTER FUNCTION tenancy.current_user_id() SET search_path = public",
    ];
    for a in attempts {
        if c.batch_execute(a).is_ok() {
            return Err(format!("the database owner could run: {a}"));
        }
    }
    Ok(())
}

fn upgrade_from(db: &str, version: &str) -> Outcome {
    let owner = format!("{db}_owner");
    let mut c = empty_db(db, &owner);
    c.batch_execute(&format!("CREATE EXTENSION tenancy VERSION '{version}'")).unwrap();
    // As shipped then, these releases left schema tenancy to the installing role (their install
    // scripts now start with the guard, so the superuser hands it back to reproduce that): the
    // owner plants, then updates.
    superuser_of(db).batch_execute(&format!("ALTER SCHEMA tenancy OWNER TO \"{owner}\"")).unwrap();
    plant_in_tenancy_schema(&mut c, &owner);
    let r = c.batch_execute("ALTER EXTENSION tenancy UPDATE");
    not_superuser(&owner)?;
    expect_refused(r, &format!("ALTER EXTENSION UPDATE from {version} with planted objects"))
}

// ---------------------------------------------------------------------------------------------
// Administrators' reports and fixes
// ---------------------------------------------------------------------------------------------

/// A database where the owner (a tenancy administrator) and `mallory` (a table owner who is not
/// an administrator) live; mallory's spy function records who runs it and, if it runs as a
/// superuser or administrator, grants itself UPDATE on tenancy.organizations.
fn mallory_db(db: &str) -> (Client, Client) {
    let owner = format!("{db}_owner");
    let mut c = empty_db(db, &owner);
    role("mallory", "");
    c.batch_execute("CREATE EXTENSION tenancy").unwrap();
    superuser_of(db)
        .batch_execute("CREATE SCHEMA m AUTHORIZATION mallory; GRANT USAGE ON SCHEMA m TO PUBLIC;")
        .unwrap();
    let mut m = connect("mallory", db);
    m.batch_execute(
        "CREATE TABLE m.spied (who name, at timestamptz DEFAULT now());
         GRANT INSERT, SELECT ON m.spied TO PUBLIC;
         CREATE FUNCTION m.spy() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $f$
         BEGIN
           INSERT INTO m.spied (who) VALUES (current_user);
           IF pg_catalog.has_table_privilege('tenancy.organizations', 'UPDATE') THEN
             EXECUTE 'GRANT UPDATE ON tenancy.organizations TO mallory';
           END IF;
           RETURN true;
         END $f$;",
    )
    .unwrap();
    (c, m)
}

fn spied_by_others(m: &mut Client) -> Vec<String> {
    m.query("SELECT DISTINCT who::text FROM m.spied WHERE who <> 'mallory'", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn mallory_gained_update(db: &str) -> bool {
    one_bool(
        &mut superuser_of(db),
        "SELECT pg_catalog.has_table_privilege('mallory', 'tenancy.organizations', 'UPDATE')",
    )
}

fn reports_run_owner_code(db: &str) -> Outcome {
    let (mut c, mut m) = mallory_db(db);
    m.batch_execute(
        "CREATE TABLE m.t (id int PRIMARY KEY, organization_id uuid);
         INSERT INTO m.t SELECT g, NULL FROM generate_series(1, 3) g;
         ALTER TABLE m.t ENABLE ROW LEVEL SECURITY;
         CREATE POLICY spy ON m.t USING (m.spy());
         GRANT SELECT ON m.t TO PUBLIC;
         SELECT tenancy.register_table('m.t');",
    )
    .unwrap();
    // The administrator (database owner) and a superuser run their reports.
    let _ = c.query("SELECT * FROM tenancy.validate_client_data_integrity()", &[]);
    let _ = c.query("SELECT * FROM tenancy.validate_client_data_integrity('m.t')", &[]);
    let _ = c.query("SELECT * FROM tenancy.lint()", &[]);
    let mut su = superuser_of(db);
    let _ = su.query("SELECT * FROM tenancy.validate_client_data_integrity()", &[]);
    let _ = su.query("SELECT * FROM tenancy.lint()", &[]);
    let others = spied_by_others(&mut m);
    if mallory_gained_update(db) {
        return Err(format!("mallory's policy ran as {others:?} and granted mallory UPDATE on tenancy.organizations"));
    }
    if !others.is_empty() {
        return Err(format!("mallory's policy function ran as {others:?}"));
    }
    Ok(())
}

fn fix_sql_from_evil_names(db: &str) -> Outcome {
    let (mut c, mut m) = mallory_db(db);
    // A parent whose name and tenant column are SQL, and a child whose foreign key lacks it.
    m.batch_execute(
        r#"CREATE TABLE m."p(" (o uuid, id int PRIMARY KEY,
                              "(o,id);GRANT UPDATE ON tenancy.organizations TO mallory;--" uuid NOT NULL, UNIQUE (o, id));
           CREATE TABLE m.c (organization_id uuid NOT NULL, id int PRIMARY KEY, p int REFERENCES m."p(" (id));
           SELECT tenancy.register_table('m."p("', '(o,id);GRANT UPDATE ON tenancy.organizations TO mallory;--');
           SELECT tenancy.register_table('m.c');"#,
    )
    .unwrap();
    // The administrator runs every fix lint prints (as \gexec would), each on its own.
    // (TEN011's fix first: others would rewrite the keys it needs.)
    let fixes: Vec<Option<String>> = c
        .query("SELECT fix FROM tenancy.lint() ORDER BY code <> 'TEN011', code", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut su = superuser_of(db);
    for fix in fixes.into_iter().flatten() {
        // One query per fix, as psql's \gexec sends them.
        let _ = su.batch_execute(&fix);
    }
    if mallory_gained_update(db) {
        return Err("a lint fix executed SQL spliced from a column name".into());
    }
    Ok(())
}

fn backfill_fk_rewrite_from_evil_names(db: &str) -> Outcome {
    let (_c, mut m) = mallory_db(db);
    m.batch_execute(
        r#"CREATE TABLE m."p(" (o uuid, id int PRIMARY KEY,
                              "(o,id);GRANT UPDATE ON tenancy.organizations TO mallory;--" uuid NOT NULL, UNIQUE (o, id),
                              UNIQUE ("(o,id);GRANT UPDATE ON tenancy.organizations TO mallory;--", id));
           SELECT tenancy.register_table('m."p("', '(o,id);GRANT UPDATE ON tenancy.organizations TO mallory;--');
           CREATE TABLE m.d (id int PRIMARY KEY, p int REFERENCES m."p(" (id));
           INSERT INTO m.d VALUES (1, NULL);"#,
    )
    .unwrap();
    let org: String =
        superuser_of(db).query_one("SELECT tenancy.create_organization('Mal', 'mal')::text", &[]).unwrap().get(0);
    // A superuser converts both tables (parent first) with the whole backfill.
    let mut su = superuser_of(db);
    let _ = su.batch_execute(&format!("CALL tenancy.backfill('m.d', '{org}', build_indexes => true)"));
    if mallory_gained_update(db) {
        return Err("the backfill's foreign key rewrite executed SQL spliced from a column name".into());
    }
    Ok(())
}

fn forged_backfill_record(db: &str) -> Outcome {
    let (_c, mut m) = mallory_db(db);
    m.batch_execute(
        "CREATE TABLE m.f (id int PRIMARY KEY, organization_id uuid);
         SELECT tenancy._privileged('record_backfill', jsonb_build_object(
             'relid', 'm.f'::regclass::oid,
             'backfill', jsonb_build_object('phase', 'converted', 'tenant_column', 'organization_id',
                 'column_type', 'uuid', 'added_column', false, 'column_existed', true,
                 'default_expr', 'x', 'old_default', 'NULL; ALTER ROLE mallory SUPERUSER; --',
                 'trigger', 'x', 'fk', 'y', 'check', 'z')));",
    )
    .ok();
    let mut su = superuser_of(db);
    let _ = su.batch_execute("SELECT tenancy.rollback('m.f')");
    let _ = su.batch_execute("SELECT tenancy.rollback('m.f', true)");
    let _ = su.batch_execute("CALL tenancy.backfill('m.f')");
    not_superuser("mallory")
}

fn forged_isolation_record(db: &str) -> Outcome {
    let (mut c, mut m) = mallory_db(db);
    // The victim: a table of the database owner, isolated.
    c.batch_execute(
        "CREATE TABLE public.victim (id int PRIMARY KEY, organization_id uuid NOT NULL);
         SELECT tenancy.enable_isolation('public.victim');",
    )
    .unwrap();
    let before = one_i64(&mut c, "SELECT count(*) FROM pg_policy WHERE polrelid = 'public.victim'::regclass");
    m.batch_execute(
        "CREATE TABLE m.g (id int PRIMARY KEY, organization_id uuid);
         SELECT tenancy._privileged('record_isolation', jsonb_build_object(
             'relid', 'm.g'::regclass::oid, 'operation', 'enable_isolation',
             'tenant_column', 'organization_id', 'column_type', 'uuid', 'mode', 'membership',
             'isolation', jsonb_build_object('table', 'm.g', 'relations', jsonb_build_object(
                 'm.g', jsonb_build_object('policies', '{}'::jsonb),
                 'public.victim', jsonb_build_object('rls_was_enabled', false, 'rls_was_forced', false,
                     'policies', jsonb_build_object('tenancy_select_boundary', '{}'::jsonb,
                                                    'tenancy_select_access', '{}'::jsonb))))));",
    )
    .ok();
    let _ = superuser_of(db).batch_execute("SELECT tenancy.disable_isolation('m.g')");
    let _ = c.batch_execute("SELECT tenancy.disable_isolation('m.g')");
    let after = one_i64(&mut c, "SELECT count(*) FROM pg_policy WHERE polrelid = 'public.victim'::regclass");
    let forced = one_bool(&mut c, "SELECT relforcerowsecurity FROM pg_class WHERE oid = 'public.victim'::regclass");
    if after != before || !forced {
        return Err(format!("a forged record made an administrator drop the victim's isolation ({before} -> {after} policies, forced {forced})"));
    }
    Ok(())
}

fn anon_writes_the_log(db: &str) -> Outcome {
    let owner = format!("{db}_owner");
    let mut c = empty_db(db, &owner);
    c.batch_execute("CREATE EXTENSION tenancy").unwrap();
    role("anon", "");
    let mut a = connect("anon", db);
    let before = one_i64(&mut c, "SELECT count(*) FROM tenancy.migration_log");
    let _ = a.batch_execute(
        "SELECT tenancy._privileged('log', jsonb_build_object('operation', 'backfill', 'status', 'succeeded',
                'details', jsonb_build_object('junk', repeat('x', 100000))))",
    );
    let after = one_i64(&mut c, "SELECT count(*) FROM tenancy.migration_log");
    if after != before {
        return Err("anon wrote a row into tenancy.migration_log".into());
    }
    Ok(())
}

fn anon_flushes_every_memo(db: &str) -> Outcome {
    let owner = format!("{db}_owner");
    let mut c = empty_db(db, &owner);
    c.batch_execute("CREATE EXTENSION tenancy").unwrap();
    role("anon", "");
    match connect("anon", db).batch_execute("SELECT tenancy._lookups_changed()") {
        Ok(()) => Err("anon could call tenancy._lookups_changed()".into()),
        Err(_) => Ok(()),
    }
}

fn public_functions_panic_or_write(db: &str) -> Outcome {
    let owner = format!("{db}_owner");
    let mut c = empty_db(db, &owner);
    c.batch_execute("CREATE EXTENSION tenancy").unwrap();
    role("anon", "");
    let mut a = connect("anon", db);
    // Every function anon may execute, called with NULLs and with garbage text.
    let funcs: Vec<(String, i32, Vec<String>)> = c
        .query(
            "SELECT p.oid::regprocedure::text, p.pronargs::int,
                    ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t)
               FROM pg_proc p WHERE p.pronamespace = 'tenancy'::regnamespace AND p.prokind = 'f'
                AND has_function_privilege('anon', p.oid, 'EXECUTE')
                AND p.prorettype <> 'trigger'::regtype",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let fingerprint = "SELECT md5(string_agg(x, ',' ORDER BY x)) FROM (
        SELECT 'o' || o::text AS x FROM tenancy.organizations o UNION ALL SELECT 'm' || m::text FROM tenancy.memberships m
        UNION ALL SELECT 't' || t::text FROM tenancy.tenant_tables t UNION ALL SELECT 'l' || l.id FROM tenancy.migration_log l
        UNION ALL SELECT 'i' || i::text FROM tenancy.invitations i) s";
    let before: Option<String> = superuser_of(db).query_one(fingerprint, &[]).unwrap().get(0);
    let garbage =
        ["NULL", "''", "'''", "'(((('", "'\u{00e9}\u{00e9}('", "'x(SELECT'", "'a''b(c'", "'::'", "'(SELECT 1))'"];
    for (f, nargs, types) in &funcs {
        let name = f.split('(').next().unwrap();
        for g in garbage {
            let args: Vec<String> = types
                .iter()
                .map(|t| {
                    if g == "NULL" || !(t == "text" || t == "name") {
                        format!("NULL::{t}")
                    } else {
                        format!("{g}::{t}")
                    }
                })
                .collect();
            let _ = nargs;
            let sql = format!("SELECT {name}({})", args.join(", "));
            if let Err(e) = a.batch_execute(&sql) {
                if e.code().map(|c| c.code()) == Some("XX000") {
                    return Err(format!("{sql} failed with an internal error (a panic?): {}", msg(&e)));
                }
            }
        }
    }
    let after: Option<String> = superuser_of(db).query_one(fingerprint, &[]).unwrap().get(0);
    if before != after {
        return Err("anon changed the catalog through a public function".into());
    }
    Ok(())
}

fn policy_parser_panics(db: &str) -> Outcome {
    let owner = format!("{db}_owner");
    let mut c = empty_db(db, &owner);
    c.batch_execute("CREATE EXTENSION tenancy").unwrap();
    role("anon", "");
    let mut a = connect("anon", db);
    let inputs = [
        "f(",
        "f('",
        "x::",
        "x::character",
        "x::\"",
        "\"",
        "a.\"b",
        "f(\u{00e9}",
        "é(",
        "x::timestamp with",
        "(SELECT",
        "f()::numeric(",
        "f()::numeric(1,",
        "ö::ö",
        "a.b.",
        "x::t[",
        "'\u{1F600}'(",
        "\u{1F600}::x(9",
    ];
    for s in inputs {
        for sql in [
            "SELECT count(*) FROM tenancy._policy_calls($1)",
            "SELECT tenancy._wrap_policy_calls($1, ARRAY['f', 'x', 'é', 'a'])",
        ] {
            if let Err(e) = a.execute(sql, &[&s]) {
                if e.code().map(|c| c.code()) == Some("XX000") {
                    return Err(format!("{sql} with {s:?}: {}", msg(&e)));
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Members, administrators of one organization, revocation
// ---------------------------------------------------------------------------------------------

fn tenant_table(c: &mut Client) {
    c.batch_execute(&format!(
        "CREATE TABLE public.items (id int PRIMARY KEY, organization_id uuid NOT NULL, body text);
         INSERT INTO public.items VALUES (1, '{ORG_A}', 'a1'), (2, '{ORG_A}', 'a2'), (3, '{ORG_B}', 'b1');
         SELECT tenancy.enable_isolation('public.items');"
    ))
    .unwrap();
}

fn admin_captures_another_organizations_user(db: &str) -> Outcome {
    let mut c = two_tenant_db(db);
    tenant_table(&mut c);
    c.batch_execute(&format!(
        "SELECT tenancy.add_member('{ORG_A}', '{USER_AD}', 'admin');
         GRANT SELECT, INSERT ON public.items TO \"{db}_app\";"
    ))
    .unwrap();
    let mut app = app_session(db);
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_AD}'")).unwrap();
    let _ = tx.batch_execute(&format!("SELECT tenancy.add_member('{ORG_A}', '{USER_B}', 'member', true)"));
    let _ = tx.commit();
    let default_b = one_bool(
        &mut c,
        &format!(
            "SELECT is_default FROM tenancy.memberships WHERE organization_id = '{ORG_B}' AND user_id = '{USER_B}'"
        ),
    );
    let default_org: Option<String> =
        c.query_one(&format!("SELECT tenancy.get_user_organization_id('{USER_B}')::text"), &[]).unwrap().get(0);
    if !default_b || default_org.as_deref() != Some(ORG_B) {
        return Err(format!("an admin of A moved B's user to A (default now {default_org:?})"));
    }
    Ok(())
}

fn removed_admins_invitation(db: &str) -> Outcome {
    let mut c = two_tenant_db(db);
    c.batch_execute(&format!("SELECT tenancy.add_member('{ORG_A}', '{USER_AD}', 'admin')")).unwrap();
    let mut app = app_session(db);
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_AD}'")).unwrap();
    let token: String = tx
        .query_one(&format!("SELECT tenancy.create_invitation('{ORG_A}', 'x@example.com', 'admin')"), &[])
        .unwrap()
        .get(0);
    tx.commit().unwrap();
    c.batch_execute(&format!("SELECT tenancy.remove_member('{ORG_A}', '{USER_AD}')")).unwrap();
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_N}'")).unwrap();
    let accepted = tx.query_one("SELECT tenancy.accept_invitation($1)", &[&token]).is_ok();
    let _ = tx.commit();
    let role: Option<String> = c
        .query_opt(
            &format!("SELECT role FROM tenancy.memberships WHERE organization_id = '{ORG_A}' AND user_id = '{USER_N}'"),
            &[],
        )
        .unwrap()
        .map(|r| r.get(0));
    if accepted || role.is_some() {
        return Err(format!("a removed admin's invitation still granted {role:?}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// User ids that are not uuids (issue 15 item 6)
// ---------------------------------------------------------------------------------------------

/// A database whose user ids are of type `ty`, with organization A owned by `owner_id`, B with no
/// member, and public.items (2 rows of A, 1 of B) isolated in membership mode for the app role.
fn user_id_db(db: &str, ty: &str, owner_id: &str) -> Client {
    let mut c = fresh_db(db, &format!("{db}_owner"));
    role(&format!("{db}_app"), "");
    grant_role(&format!("{db}_app"), &format!("{db}_owner"));
    c.execute("SELECT tenancy.set_user_id_type($1)", &[&ty]).unwrap();
    c.batch_execute(&format!(
        "SELECT tenancy.create_organization('Org A', 'org-a', '{ORG_A}');
         SELECT tenancy.create_organization('Org B', 'org-b', '{ORG_B}');"
    ))
    .unwrap();
    c.execute(&format!("SELECT tenancy.add_member('{ORG_A}', $1, 'owner')"), &[&owner_id]).unwrap();
    tenant_table(&mut c);
    c.batch_execute(&format!("GRANT SELECT, INSERT ON public.items TO \"{db}_app\"")).unwrap();
    c
}

/// Rows of items the acting user named by `setting` (tenancy.user_id) or by `sub` (the JWT
/// subject) sees, and whether validate_client_access says it belongs to A; an error is a refusal.
fn reach_as(app: &mut Client, setting: Option<&str>, sub: Option<&str>, variant: &str) -> (i64, bool) {
    let mut tx = app.transaction().unwrap();
    if let Some(s) = setting {
        tx.execute("SELECT set_config('tenancy.user_id', $1, true)", &[&s]).unwrap();
    }
    if let Some(s) = sub {
        let escaped: String = s
            .chars()
            .map(|c| match c {
                '"' => "\\\"".to_string(),
                '\\' => "\\\\".to_string(),
                c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32),
                c => c.to_string(),
            })
            .collect();
        let claims = format!(r#"{{"sub": "{escaped}"}}"#);
        tx.execute("SELECT set_config('request.jwt.claims', $1, true)", &[&claims]).unwrap();
    }
    // In the same transaction: catalog RLS shows a user only its own memberships.
    let Ok(rows) = tx.query_one("SELECT count(*) FROM public.items", &[]).map(|r| r.get::<_, i64>(0)) else {
        return (0, false);
    };
    let access = tx
        .query_one(&format!("SELECT tenancy.validate_client_access($1::text, '{ORG_A}')"), &[&variant])
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false);
    (rows, access)
}

/// Spellings of a member's id that are not that id (a prefix, another case, white space around
/// it, another spelling of the number) must reach nothing: text ids are compared exactly, and
/// bigint ids are accepted only in their canonical decimal form.
fn user_id_variants(db: &str, ty: &str, member: &str, variants: &[&str]) -> Outcome {
    user_id_db(db, ty, member);
    let mut app = app_session(db);
    let (rows, access) = reach_as(&mut app, Some(member), None, member);
    if rows != 2 || !access {
        return Err(format!("setup: the member {member:?} sees {rows} rows (access {access})"));
    }
    let mut got = Vec::new();
    for v in variants {
        for (setting, sub) in [(Some(*v), None), (None, Some(*v))] {
            let (rows, access) = reach_as(&mut app, setting, sub, v);
            if rows > 0 || access {
                got.push(format!(
                    "{v:?} ({}) read {rows} rows of A, access {access}",
                    if setting.is_some() { "tenancy.user_id" } else { "JWT sub" }
                ));
            }
        }
    }
    if got.is_empty() {
        Ok(())
    } else {
        Err(got.join("; "))
    }
}

/// Only a tenancy administrator chooses the type of user ids.
fn non_administrator_sets_user_id_type(db: &str) -> Outcome {
    let mut c = fresh_db(db, &format!("{db}_owner"));
    role(&format!("{db}_app"), "");
    grant_role(&format!("{db}_app"), &format!("{db}_owner"));
    c.batch_execute(&format!("SELECT tenancy.create_organization('Org A', 'org-a', '{ORG_A}')")).unwrap();
    let mut app = app_session(db);
    let mut got = Vec::new();
    for attempt in [
        "SELECT tenancy.set_user_id_type('text')",
        "SELECT tenancy._privileged('set_user_id_type', '{\"type\": \"text\"}')",
        "SELECT tenancy._op_set_user_id_type('{\"type\": \"text\"}', 0, true, NULL)",
    ] {
        let r = app.batch_execute(attempt);
        if sqlstate(r) != "42501" {
            got.push(format!("{attempt} was not refused with 42501"));
        }
    }
    let ty: String = c.query_one("SELECT tenancy.user_id_type()", &[]).unwrap().get(0);
    if ty != "uuid" {
        got.push(format!("user ids are now {ty}"));
    }
    if got.is_empty() {
        Ok(())
    } else {
        Err(got.join("; "))
    }
}

/// Once user ids are stored, their type is fixed: bigint user 1 must not become text user '1'
/// (another identity provider's user) by a change of type.
fn user_id_type_switch_with_members(db: &str) -> Outcome {
    let mut c = user_id_db(db, "bigint", "1");
    let r = c.batch_execute("SELECT tenancy.set_user_id_type('text')");
    let state = sqlstate(r);
    let ty: String = c.query_one("SELECT tenancy.user_id_type()", &[]).unwrap().get(0);
    let mut app = app_session(db);
    let (rows, _) = reach_as(&mut app, Some("1"), None, "1");
    if state != "55000" || ty != "bigint" {
        return Err(format!("the switch gave {state}; user ids are now {ty}; text user '1' reads {rows} rows of A"));
    }
    Ok(())
}

fn visible_items(tx: &mut postgres::Transaction) -> i64 {
    one_i64(tx, "SELECT count(*) FROM public.items")
}

/// A revocation committed while a REPEATABLE READ / SERIALIZABLE transaction, or a cursor, holds
/// an older snapshot must count from the next transaction on.
fn memo_outlives_revocation(db: &str, isolation: &str) -> Outcome {
    let mut c = two_tenant_db(db);
    tenant_table(&mut c);
    c.batch_execute(&format!(
        "SELECT tenancy.add_member('{ORG_A}', '{USER_N}', 'member');
         GRANT SELECT, INSERT ON public.items TO \"{db}_app\";"
    ))
    .unwrap();
    let mut app = app_session(db);
    let mut tx = app
        .build_transaction()
        .isolation_level(match isolation {
            "serializable" => postgres::IsolationLevel::Serializable,
            _ => postgres::IsolationLevel::RepeatableRead,
        })
        .start()
        .unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_N}'")).unwrap();
    let first = visible_items(&mut tx);
    if first != 2 {
        return Err(format!("setup: the member sees {first} rows, not 2"));
    }
    c.batch_execute(&format!("SELECT tenancy.remove_member('{ORG_A}', '{USER_N}')")).unwrap();
    let _ = visible_items(&mut tx); // recomputed under the old snapshot
    let _ = tx.query_one(&format!("SELECT tenancy.validate_client_access('{USER_N}', '{ORG_A}')"), &[]);
    tx.commit().unwrap();
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_N}'")).unwrap();
    let later = visible_items(&mut tx);
    let access = one_bool(&mut tx, &format!("SELECT tenancy.validate_client_access('{USER_N}', '{ORG_A}')"));
    let inserted = tx.batch_execute(&format!("INSERT INTO public.items VALUES (99, '{ORG_A}', 'x')")).is_ok();
    drop(tx);
    if later != 0 || access || inserted {
        return Err(format!("after remove_member committed: {later} rows, access {access}, insert {inserted}"));
    }
    Ok(())
}

fn memo_outlives_revocation_in_a_cursor(db: &str) -> Outcome {
    let mut c = two_tenant_db(db);
    tenant_table(&mut c);
    c.batch_execute(&format!(
        "SELECT tenancy.add_member('{ORG_A}', '{USER_N}', 'member');
         GRANT SELECT ON public.items TO \"{db}_app\";"
    ))
    .unwrap();
    let mut app = app_session(db);
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!(
        "SET LOCAL tenancy.user_id = '{USER_N}';
         DECLARE cur CURSOR FOR SELECT tenancy.validate_client_access('{USER_N}', '{ORG_A}') FROM generate_series(1, 3);
         FETCH 1 FROM cur;"
    ))
    .unwrap();
    c.batch_execute(&format!("SELECT tenancy.remove_member('{ORG_A}', '{USER_N}')")).unwrap();
    let _ = tx.batch_execute("SELECT 1; FETCH 2 FROM cur;");
    tx.commit().unwrap();
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_N}'")).unwrap();
    let later = visible_items(&mut tx);
    let access = one_bool(&mut tx, &format!("SELECT tenancy.validate_client_access('{USER_N}', '{ORG_A}')"));
    if later != 0 || access {
        return Err(format!("after remove_member committed (cursor): {later} rows, access {access}"));
    }
    Ok(())
}

fn deactivation_seen_next_transaction(db: &str) -> Outcome {
    let mut c = two_tenant_db(db);
    tenant_table(&mut c);
    c.batch_execute(&format!("GRANT SELECT ON public.items TO \"{db}_app\";")).unwrap();
    let mut app = app_session(db);
    let mut tx = app.build_transaction().isolation_level(postgres::IsolationLevel::RepeatableRead).start().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
    let _ = visible_items(&mut tx);
    c.batch_execute(&format!("SELECT tenancy.deactivate_organization('{ORG_A}')")).unwrap();
    let _ = visible_items(&mut tx);
    tx.commit().unwrap();
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
    let later = visible_items(&mut tx);
    if later != 0 {
        return Err(format!("after deactivate_organization committed: {later} rows"));
    }
    Ok(())
}

/// A SECURITY DEFINER function owned by the tenancy administrator (the Supabase pattern).
fn admin_bypass_in_security_definer(db: &str) -> Outcome {
    let mut c = two_tenant_db(db);
    tenant_table(&mut c);
    role("anon", "");
    c.batch_execute(
        "CREATE FUNCTION public.count_items() RETURNS bigint LANGUAGE sql SECURITY DEFINER
           SET search_path = pg_catalog, pg_temp AS 'SELECT count(*) FROM public.items';
         GRANT EXECUTE ON FUNCTION public.count_items() TO PUBLIC;",
    )
    .unwrap();
    grant_role(&format!("{db}_app"), "anon");
    let mut app = app_session(db);
    let forgeries = [
        (Some(USER_N), format!("SET LOCAL tenancy.organization_id = '{ORG_B}'")),
        (Some(USER_N), format!("SELECT set_config('request.jwt.claims', '{{\"sub\": \"{USER_N}\", \"organization_id\": \"{ORG_B}\"}}', true)")),
        (Some(USER_A), format!("SET LOCAL tenancy.organization_id = '{ORG_B}'")),
        (None, format!("SET LOCAL tenancy.organization_id = '{ORG_B}'")),
        (None, format!("SELECT set_config('request.jwt.claims', '{{\"role\": \"anon\", \"organization_id\": \"{ORG_B}\"}}', true)")),
    ];
    let mut anon = connect("anon", db);
    for (user, forgery) in &forgeries {
        for client in [&mut app, &mut anon] {
            let mut tx = client.transaction().unwrap();
            if let Some(u) = user {
                tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{u}'")).unwrap();
            }
            tx.batch_execute(forgery).unwrap();
            let n = one_i64(&mut tx, "SELECT public.count_items()");
            drop(tx);
            if n != 0 {
                return Err(format!("user {user:?} with {forgery} read {n} rows of B through the administrator's SECURITY DEFINER function"));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Operator mode (tenancy.operate): entered only explicitly, by an administrator acting as itself,
// for one transaction
// ---------------------------------------------------------------------------------------------

/// What an attacker sees of the tenant table in the current transaction: (operating(), rows).
fn operator_view(tx: &mut impl postgres::GenericClient) -> (bool, i64) {
    (one_bool(tx, "SELECT tenancy.operating()"), one_i64(tx, "SELECT count(*) FROM public.items"))
}

/// Refused operate(), and nothing gained: operating() false, no rows of the tenant table.
fn operate_refused(tx: &mut impl postgres::GenericClient, who: &str) -> Outcome {
    let r = tx.batch_execute("SAVEPOINT op; SELECT tenancy.operate('attack')");
    if r.is_ok() {
        return Err(format!("{who}: tenancy.operate() was accepted"));
    }
    tx.batch_execute("ROLLBACK TO SAVEPOINT op").unwrap();
    match operator_view(tx) {
        (false, 0) => Ok(()),
        (on, n) => Err(format!("{who}: operating() = {on}, {n} rows of the tenant table")),
    }
}

/// A database with organizations A and B, public.items isolated (2 rows of A, 1 of B), readable by
/// the application role, and `mallory`, a table owner who is not an administrator.
fn operator_db(db: &str) -> Client {
    let mut c = two_tenant_db(db);
    tenant_table(&mut c);
    role("mallory", "");
    c.batch_execute(&format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON public.items TO \"{db}_app\", mallory;
         GRANT CREATE ON SCHEMA public TO mallory;"
    ))
    .unwrap();
    c
}

fn operate_as_the_app_role(db: &str, plant: Option<&str>) -> Outcome {
    operator_db(db);
    weaken(db, plant.map(|p| p.replace("{app}", &format!("{db}_app"))).as_deref(), &format!("{db}_owner"));
    let mut app = app_session(db);
    let mut tx = app.transaction().unwrap();
    operate_refused(&mut tx, "the application role")
}

fn operate_as_a_table_owner(db: &str) -> Outcome {
    operator_db(db);
    let mut m = connect("mallory", db);
    m.batch_execute(&format!(
        "CREATE TABLE public.mine (id int PRIMARY KEY, organization_id uuid NOT NULL);
         INSERT INTO public.mine VALUES (1, '{ORG_A}'), (2, '{ORG_B}');
         SELECT tenancy.enable_isolation('public.mine');"
    ))
    .unwrap();
    let mut tx = m.transaction().unwrap();
    operate_refused(&mut tx, "a table owner who is not an administrator")?;
    let own = one_i64(&mut tx, "SELECT count(*) FROM public.mine");
    if own != 0 {
        return Err(format!("a table owner read {own} rows of its isolated table without a user"));
    }
    Ok(())
}

fn operate_with_a_user(db: &str) -> Outcome {
    let mut c = operator_db(db);
    for setting in [
        format!("SET LOCAL tenancy.user_id = '{USER_N}'"),
        format!("SELECT set_config('request.jwt.claims', '{{\"sub\": \"{USER_N}\"}}', true)"),
    ] {
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(&setting).unwrap();
        operate_refused(&mut tx, &format!("an administrator after {setting}"))?;
    }
    Ok(())
}

/// An administrator's SECURITY DEFINER function that enters operator mode, called by others.
fn operate_inside_an_administrators_security_definer(db: &str) -> Outcome {
    let mut c = operator_db(db);
    c.batch_execute(
        "CREATE FUNCTION public.ops_count() RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
           SET search_path = pg_catalog, pg_temp AS $f$
         BEGIN PERFORM tenancy.operate('called for a user'); RETURN (SELECT count(*) FROM public.items); END $f$;
         GRANT EXECUTE ON FUNCTION public.ops_count() TO PUBLIC;",
    )
    .unwrap();
    let mut app = app_session(db);
    let mut m = connect("mallory", db);
    for (who, client) in [("the application role", &mut app), ("mallory", &mut m)] {
        let mut tx = client.transaction().unwrap();
        if let Ok(r) = tx.query_one("SELECT public.ops_count()", &[]) {
            let n: i64 = r.get(0);
            return Err(format!(
                "{who} ran the administrator's function, which entered operator mode and read {n} rows"
            ));
        }
        drop(tx);
        let mut tx = client.transaction().unwrap();
        let (on, n) = operator_view(&mut tx);
        if on || n != 0 {
            return Err(format!("{who}: operating() = {on}, {n} rows after calling it"));
        }
    }
    Ok(())
}

/// Any setting a client may write, under the names an implementation might use.
fn operate_by_a_setting(db: &str, plant: Option<&str>) -> Outcome {
    let mut c = operator_db(db);
    weaken(db, plant, &format!("{db}_owner"));
    let names = [
        "tenancy.operating",
        "tenancy.operate",
        "tenancy.operator",
        "tenancy.operator_mode",
        "tenancy.mode",
        "tenancy.bypass",
        "tenancy.admin",
        "tenancy.reason",
        "tenancy.user_id",
        "tenancy.organization_id",
    ];
    let mut app = app_session(db);
    for (who, client) in [("the administrator", &mut c), ("the application role", &mut app)] {
        for name in names {
            for value in ["on", "true", "1", "all", "operate"] {
                let mut tx = client.transaction().unwrap();
                let _ = tx.batch_execute(&format!("SELECT set_config('{name}', '{value}', true)"));
                let _ = tx.batch_execute(&format!("SELECT set_config('{name}', '{value}', false)"));
                // An error (tenancy.user_id = 'on' is not a uuid: 22P02) gains nothing.
                let on = tx.query_one("SELECT tenancy.operating()", &[]).map(|r| r.get::<_, bool>(0)).unwrap_or(false);
                let n = tx.query_one("SELECT count(*) FROM public.items", &[]).map(|r| r.get::<_, i64>(0)).unwrap_or(0);
                drop(tx);
                if on || n != 0 {
                    return Err(format!("{who} with {name} = {value}: operating() = {on}, {n} rows"));
                }
            }
        }
    }
    Ok(())
}

/// Operator mode does not outlive its transaction, nor a rolled-back savepoint (nor its log row).
fn operator_mode_outlives(db: &str, end: &str) -> Outcome {
    let mut c = operator_db(db);
    let logged = |c: &mut Client| one_i64(c, "SELECT count(*) FROM tenancy.migration_log WHERE operation = 'operate'");
    let before = logged(&mut c);
    c.batch_execute("BEGIN").unwrap();
    let sub = end.starts_with("ROLLBACK TO");
    if sub {
        c.batch_execute("SAVEPOINT s1; SAVEPOINT s2").unwrap();
    }
    c.batch_execute("SELECT tenancy.operate('maintenance')").unwrap();
    let (on, n) = operator_view(&mut c);
    if !(on && n == 3) {
        c.batch_execute("ROLLBACK").unwrap();
        return Err(format!("the case is broken: in operator mode operating() = {on}, {n} rows"));
    }
    if sub {
        // RELEASE hands the mode to the enclosing savepoint; rolling that back ends it.
        c.batch_execute("RELEASE SAVEPOINT s2").unwrap();
    }
    c.batch_execute(end).unwrap();
    let (on, n) = operator_view(&mut c);
    let _ = c.batch_execute("ROLLBACK");
    if on || n != 0 {
        return Err(format!("after {end}: operating() = {on}, {n} rows"));
    }
    // The next transaction of the same connection.
    let (on, n) = operator_view(&mut c);
    if on || n != 0 {
        return Err(format!("in the transaction after {end}: operating() = {on}, {n} rows"));
    }
    let after = logged(&mut c);
    let expected = before + i64::from(end == "COMMIT");
    if after != expected {
        return Err(format!("after {end}: {after} operate rows in migration_log, expected {expected}"));
    }
    Ok(())
}

/// A table owner's SECURITY DEFINER function, called by an administrator in operator mode, reads
/// what its owner may read without a user: nothing.
fn table_owners_security_definer_in_operator_mode(db: &str) -> Outcome {
    let mut c = operator_db(db);
    let mut m = connect("mallory", db);
    m.batch_execute(&format!(
        "CREATE TABLE public.mine (id int PRIMARY KEY, organization_id uuid NOT NULL);
         INSERT INTO public.mine VALUES (1, '{ORG_A}'), (2, '{ORG_B}');
         SELECT tenancy.enable_isolation('public.mine');
         GRANT SELECT ON public.mine TO PUBLIC;
         CREATE FUNCTION public.peek() RETURNS bigint LANGUAGE sql SECURITY DEFINER
           SET search_path = pg_catalog, pg_temp
           AS 'SELECT (SELECT count(*) FROM public.items) + (SELECT count(*) FROM public.mine)';
         CREATE FUNCTION public.peek_operating() RETURNS boolean LANGUAGE sql SECURITY DEFINER
           SET search_path = pg_catalog, pg_temp AS 'SELECT tenancy.operating()';
         GRANT EXECUTE ON FUNCTION public.peek(), public.peek_operating() TO PUBLIC;"
    ))
    .unwrap();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("SELECT tenancy.operate('validation')").unwrap();
    let mine = one_i64(&mut tx, "SELECT count(*) FROM public.mine");
    let peeked = one_i64(&mut tx, "SELECT public.peek()");
    let on_inside = one_bool(&mut tx, "SELECT public.peek_operating()");
    if peeked != 0 || on_inside {
        return Err(format!(
            "mallory's SECURITY DEFINER function called by an operator read {peeked} rows (operating() inside: {on_inside})"
        ));
    }
    if mine != 2 {
        return Err(format!("the case is broken: the operator read {mine} rows of public.mine, expected 2"));
    }
    Ok(())
}

/// Setting a user ends operator mode, for the rest of the transaction.
fn operator_mode_with_a_user_set_later(db: &str) -> Outcome {
    let mut c = operator_db(db);
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("SELECT tenancy.operate('validation')").unwrap();
    for (setting, what) in [
        (format!("SET LOCAL tenancy.user_id = '{USER_N}'"), "with a user set"),
        ("SET LOCAL tenancy.user_id = ''".to_string(), "after the user was set back to nothing"),
    ] {
        tx.batch_execute(&setting).unwrap();
        let (on, n) = operator_view(&mut tx);
        if on || n != 0 {
            return Err(format!("operator mode {what}: operating() = {on}, {n} rows"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Login before any tenant context (tenancy.login_lookup)
// ---------------------------------------------------------------------------------------------

/// A table owner who is not an administrator allows login lookups on a table it does not own.
fn login_lookup_on_a_table_not_owned(db: &str) -> Outcome {
    let mut c = operator_db(db);
    role("login_r", "");
    c.batch_execute("SELECT tenancy.allow_login_lookup('public.items', 'body', '{organization_id}', 'login_r')")
        .unwrap();
    let mut m = connect("mallory", db);
    for sql in [
        "SELECT tenancy.allow_login_lookup('public.items', 'body', '{id,organization_id}', 'mallory')",
        "SELECT tenancy.revoke_login_lookup('public.items')",
        "INSERT INTO tenancy.login_lookups VALUES ('public.items', 'body', '{id}', 'mallory')",
        "UPDATE tenancy.login_lookups SET grantee = 'mallory'",
    ] {
        if m.batch_execute(sql).is_ok() {
            return Err(format!("mallory ran {sql}"));
        }
    }
    if let Ok(rows) = m.query("SELECT * FROM tenancy.login_lookup('public.items', 'a1')", &[]) {
        return Err(format!("mallory read {} rows through another role's login lookup", rows.len()));
    }
    Ok(())
}

/// Roles the owner did not name call the lookup: the application role, anon, a member.
fn login_lookup_by_others(db: &str) -> Outcome {
    let mut c = operator_db(db);
    role("login_r", "");
    role("anon", "");
    c.batch_execute("SELECT tenancy.allow_login_lookup('public.items', 'body', '{id,organization_id}', 'login_r')")
        .unwrap();
    let mut app = app_session(db);
    let mut anon = connect("anon", db);
    for (who, client) in [("the application role", &mut app), ("anon", &mut anon)] {
        for user in [None, Some(USER_A)] {
            let mut tx = client.transaction().unwrap();
            if let Some(u) = user {
                tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{u}'")).unwrap();
            }
            if let Ok(rows) = tx.query("SELECT * FROM tenancy.login_lookup('public.items', 'b1')", &[]) {
                return Err(format!("{who} (user {user:?}) read {} rows of B by login lookup", rows.len()));
            }
        }
    }
    // The named role, after the owner revoked it: refused in the very next statement.
    let mut l = connect("login_r", db);
    let before = l.query("SELECT * FROM tenancy.login_lookup('public.items', 'b1')", &[]).map(|r| r.len()).unwrap_or(0);
    c.batch_execute("SELECT tenancy.revoke_login_lookup('public.items')").unwrap();
    if before != 1 {
        return Err(format!("the case is broken: the named role read {before} rows"));
    }
    if let Ok(rows) = l.query("SELECT * FROM tenancy.login_lookup('public.items', 'b1')", &[]) {
        return Err(format!("after revoke_login_lookup the named role still read {} rows", rows.len()));
    }
    Ok(())
}

/// A table owner's login lookup reads its table as the superuser: none of the owner's code runs
/// (its policy), and a column of the owner's type is refused.
fn login_lookup_runs_owner_code(db: &str) -> Outcome {
    let (_c, mut m) = mallory_db(db);
    m.batch_execute(
        "CREATE TYPE m.mood AS ENUM ('ok');
         CREATE TABLE m.u (id int PRIMARY KEY, email text, mood m.mood, organization_id uuid);
         INSERT INTO m.u VALUES (1, 'x@example.com', 'ok', NULL);
         ALTER TABLE m.u ENABLE ROW LEVEL SECURITY; ALTER TABLE m.u FORCE ROW LEVEL SECURITY;
         CREATE POLICY spy ON m.u USING (m.spy());
         SELECT tenancy.allow_login_lookup('m.u', 'email', '{id}', 'mallory');",
    )
    .unwrap();
    let n = m.query("SELECT * FROM tenancy.login_lookup('m.u', 'x@example.com')", &[]).map(|r| r.len()).unwrap_or(0);
    if m.batch_execute("SELECT tenancy.allow_login_lookup('m.u', 'email', '{id,mood}', 'mallory')").is_ok() {
        return Err("a column of the owner's type was accepted for a lookup read as the superuser".into());
    }
    let others = spied_by_others(&mut m);
    if mallory_gained_update(db) || !others.is_empty() {
        return Err(format!("mallory's policy ran as {others:?} during a login lookup"));
    }
    if n != 1 {
        return Err(format!("the case is broken: the lookup returned {n} rows"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// What lint and the integrity report must see
// ---------------------------------------------------------------------------------------------

fn lint_codes(c: &mut Client) -> Vec<(String, String)> {
    c.query("SELECT code, object FROM tenancy.lint()", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
}

fn members_with_trigger_and_truncate(db: &str, plant: Option<&str>) -> Outcome {
    let mut c = two_tenant_db(db);
    tenant_table(&mut c);
    weaken(db, plant, "");
    c.batch_execute(&format!("GRANT ALL ON public.items TO \"{db}_app\"")).unwrap();
    let codes = lint_codes(&mut c);
    let flagged = codes.iter().any(|(code, obj)| code == "TEN016" && obj.contains("public.items"));
    if !flagged {
        return Err(format!("TRIGGER/TRUNCATE on a tenant table granted to a restricted role: lint says {codes:?}"));
    }
    // Applying lint's fix removes them.
    let fixes: Vec<String> = c
        .query("SELECT fix FROM tenancy.lint() WHERE code = 'TEN016'", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for f in fixes {
        c.batch_execute(&f).unwrap();
    }
    let still = one_bool(
        &mut c,
        &format!("SELECT has_table_privilege('{db}_app', 'public.items', 'TRUNCATE') OR has_table_privilege('{db}_app', 'public.items', 'TRIGGER')"),
    );
    if still {
        return Err("lint's TEN016 fix left TRIGGER or TRUNCATE".into());
    }
    Ok(())
}

fn partition_added_after_isolation(db: &str) -> Outcome {
    let mut c = two_tenant_db(db);
    c.batch_execute(&format!(
        "CREATE TABLE public.ev (id int, organization_id uuid NOT NULL, PRIMARY KEY (organization_id, id))
           PARTITION BY LIST (organization_id);
         CREATE TABLE public.ev_a PARTITION OF public.ev FOR VALUES IN ('{ORG_A}');
         INSERT INTO public.ev VALUES (1, '{ORG_A}');
         SELECT tenancy.enable_isolation('public.ev');
         CREATE TABLE public.ev_b PARTITION OF public.ev FOR VALUES IN ('{ORG_B}');"
    ))
    .unwrap();
    superuser_of(db).batch_execute(&format!("INSERT INTO public.ev VALUES (2, '{ORG_B}')")).unwrap();
    let codes = lint_codes(&mut c);
    if !codes.iter().any(|(code, obj)| code == "TEN017" && obj.contains("ev_b")) {
        return Err(format!("a partition added after enable_isolation is not reported by lint: {codes:?}"));
    }
    let ok = one_bool(&mut c, "SELECT ok FROM tenancy.validate_client_data_integrity('public.ev')");
    if ok {
        return Err("the integrity report says ok for a table with an unprotected partition".into());
    }
    Ok(())
}

fn report_with_an_unreadable_table(db: &str) -> Outcome {
    let (mut c, mut m) = mallory_db(db);
    role("ops", "");
    c.batch_execute(
        "CREATE TABLE public.mine (id int PRIMARY KEY, organization_id uuid);
         SELECT tenancy.register_table('public.mine');
         GRANT UPDATE ON tenancy.organizations TO ops; GRANT SELECT ON public.mine TO ops;",
    )
    .unwrap();
    m.batch_execute(
        "CREATE TABLE m.secret (id int PRIMARY KEY, organization_id uuid); SELECT tenancy.register_table('m.secret');",
    )
    .unwrap();
    let mut ops = connect("ops", db);
    match ops.query("SELECT table_name, ok FROM tenancy.validate_client_data_integrity()", &[]) {
        Err(e) => Err(format!("one table ops cannot read makes the whole report fail: {}", msg(&e))),
        Ok(rows) => {
            let secret: Vec<bool> =
                rows.iter().filter(|r| r.get::<_, String>(0) == "m.secret").map(|r| r.get(1)).collect();
            if rows.len() != 2 || secret != vec![false] {
                return Err(format!(
                    "expected 2 rows, m.secret not ok; got {} rows, m.secret ok {secret:?}",
                    rows.len()
                ));
            }
            Ok(())
        }
    }
}

fn report_that_cannot_see_says_ok(db: &str) -> Outcome {
    let mut c = two_tenant_db(db);
    // Every catalog fact holds; one row of A points at B's parent row, which only a report that
    // sees every row can count.
    c.batch_execute(&format!(
        "CREATE TABLE public.par (id int PRIMARY KEY, organization_id uuid NOT NULL REFERENCES tenancy.organizations (id));
         CREATE INDEX ON public.par (organization_id);
         CREATE TABLE public.chi (id int PRIMARY KEY, organization_id uuid NOT NULL REFERENCES tenancy.organizations (id),
                                  par_id int REFERENCES public.par (id));
         CREATE INDEX ON public.chi (organization_id);
         INSERT INTO public.par VALUES (1, '{ORG_A}'), (2, '{ORG_B}');
         INSERT INTO public.chi VALUES (1, '{ORG_A}', 2);
         SELECT tenancy.enable_isolation('public.par'); SELECT tenancy.enable_isolation('public.chi');"
    ))
    .unwrap();
    let r = c
        .query_one(
            "SELECT total_rows, cross_tenant_rows, ok FROM tenancy.validate_client_data_integrity('public.chi')",
            &[],
        )
        .unwrap();
    let (total, cross, ok): (i64, i64, bool) = (r.get(0), r.get(1), r.get(2));
    if ok {
        return Err(format!("the administrator's report counted {total} rows, {cross} crossing tenants, and said ok"));
    }
    Ok(())
}

fn tenant_tables_readable_by_all(db: &str, plant: Option<&str>) -> Outcome {
    let (mut c, _m) = mallory_db(db);
    weaken(db, plant, "");
    let org: String = c.query_one("SELECT tenancy.create_organization('Src', 'src')::text", &[]).unwrap().get(0);
    c.batch_execute("CREATE TABLE public.src (id int PRIMARY KEY); INSERT INTO public.src VALUES (1);").unwrap();
    c.batch_execute(&format!("CALL tenancy.backfill('public.src', '{org}')")).unwrap();
    role("anon", "");
    let seen = one_i64(&mut connect("anon", db), "SELECT count(*) FROM tenancy.tenant_tables");
    let seen_m = one_i64(&mut connect("mallory", db), "SELECT count(*) FROM tenancy.tenant_tables");
    if seen != 0 || seen_m != 0 {
        return Err(format!("tenant_tables shows others' tables (anon {seen}, mallory {seen_m})"));
    }
    Ok(())
}

fn slug_enumeration_by_references(db: &str, plant: Option<&str>) -> Outcome {
    let (_c, mut m) = mallory_db(db);
    weaken(db, plant, "");
    let r = m.batch_execute("CREATE TABLE m.probe (slug text REFERENCES tenancy.organizations (slug));");
    expect_refused(r, "a table owner's foreign key on tenancy.organizations(slug)")
}

fn long_identifiers(db: &str) -> Outcome {
    let mut c = two_tenant_db(db);
    let table = "t".repeat(63);
    let column = "c".repeat(63);
    c.batch_execute(&format!(
        "CREATE TABLE public.\"{table}\" (id int PRIMARY KEY, \"{column}\" int UNIQUE);
         INSERT INTO public.\"{table}\" SELECT g, g FROM generate_series(1, 50) g;"
    ))
    .unwrap();
    let started = Instant::now();
    let (tx_done, rx) = std::sync::mpsc::channel();
    let port = port();
    let (db2, table2) = (db.to_string(), table.clone());
    std::thread::spawn(move || {
        let mut c =
            Client::connect(&format!("host=127.0.0.1 port={port} user={db2}_owner dbname={db2}"), postgres::NoTls)
                .unwrap();
        c.batch_execute("SET statement_timeout = '60s'").unwrap();
        let r =
            c.batch_execute(&format!("CALL tenancy.backfill('public.\"{table2}\"', '{ORG_A}', build_indexes => true)"));
        let _ = tx_done.send(r.map_err(|e| msg(&e)));
    });
    match rx.recv_timeout(Duration::from_secs(90)) {
        Err(_) => return Err("a backfill of a table with 63-byte names did not finish in 90 s".into()),
        Ok(Err(e)) => return Err(format!("a backfill of a table with 63-byte names failed: {e}")),
        Ok(Ok(())) => {}
    }
    let pending = one_i64(&mut c, "SELECT count(*) FROM tenancy.pending_statements()");
    let phase: Option<String> = c
        .query_one(&format!("SELECT details->'backfill'->>'phase' FROM tenancy.tenant_tables WHERE relid = 'public.\"{table}\"'::regclass"), &[])
        .unwrap()
        .get(0);
    if pending != 0 || phase.as_deref() != Some("converted") {
        return Err(format!(
            "63-byte names: phase {phase:?}, {pending} pending statements after {:?}",
            started.elapsed()
        ));
    }
    // The rest of the life of such a table: isolation, lint, rollback.
    for sql in [
        format!("SELECT tenancy.enable_isolation('public.\"{table}\"')"),
        "SELECT count(*) FROM tenancy.lint()".to_string(),
        format!("SELECT count(*) FROM tenancy.validate_client_data_integrity('public.\"{table}\"')"),
        format!("SELECT tenancy.disable_isolation('public.\"{table}\"')"),
        format!("SELECT tenancy.rollback('public.\"{table}\"', true)"),
    ] {
        if let Err(e) = c.batch_execute(&sql) {
            return Err(format!("63-byte names: {sql}: {}", msg(&e)));
        }
    }
    let left = one_i64(&mut c, &format!("SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.\"{table}\"'::regclass AND attname = 'organization_id'"));
    if left != 0 {
        return Err("63-byte names: rollback left the tenant column".into());
    }
    Ok(())
}

fn forged_index_record_for_gexec(db: &str) -> Outcome {
    let (mut c, mut m) = mallory_db(db);
    // The victim: an index of the database owner, in the schema where mallory's table lives.
    superuser_of(db).batch_execute("GRANT CREATE ON SCHEMA m TO PUBLIC").unwrap();
    c.batch_execute("CREATE TABLE m.victim (id int PRIMARY KEY, v int); CREATE INDEX victim_v_idx ON m.victim (v);")
        .unwrap();
    // Mallory's record says its table waits for an index named like the victim's.
    m.batch_execute(
        "CREATE TABLE m.h (id int PRIMARY KEY, organization_id uuid);
         SELECT tenancy._privileged('record_backfill', jsonb_build_object(
             'relid', 'm.h'::regclass::oid,
             'backfill', jsonb_build_object('phase', 'awaiting_indexes', 'tenant_column', 'organization_id',
                 'column_type', 'uuid', 'indexes', jsonb_build_array(
                     jsonb_build_object('name', 'victim_v_idx', 'columns', jsonb_build_array('organization_id', 'id'))))));",
    )
    .unwrap();
    // The DBA runs what pending_statements() prints, as psql's \gexec would.
    let mut su = superuser_of(db);
    let statements: Vec<String> =
        su.query("SELECT statement FROM tenancy.pending_statements()", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    for st in &statements {
        let _ = su.batch_execute(st);
    }
    let victim_intact = one_bool(&mut c, "SELECT to_regclass('m.victim_v_idx') IS NOT NULL");
    if !victim_intact {
        return Err(format!("a forged record made pending_statements() drop another table's index: {statements:?}"));
    }
    Ok(())
}

fn internal_table_operations_called_directly(db: &str) -> Outcome {
    let (_c, mut m) = mallory_db(db);
    m.batch_execute("CREATE TABLE m.k (id int PRIMARY KEY)").unwrap();
    let mut su = superuser_of(db);
    // As somebody else than the owner, the work functions refuse to run at all.
    for sql in [
        "SELECT tenancy._owner_rollback('m.k'::regclass, '{}')",
        "SELECT tenancy._owner_backfill_step('m.k'::regclass, '{}')",
        "SELECT tenancy._owner_null_check('m.k'::regclass, '{\"column\": \"id\"}')",
    ] {
        if su.batch_execute(sql).is_ok() {
            return Err(format!("a superuser ran {sql} directly, with its own rights"));
        }
    }
    // Through the door, a role that is not the owner is refused.
    role("bystander", "");
    let r = connect("bystander", db).batch_execute("SELECT tenancy._as_owner('m.k'::regclass, 'rollback', '{}')");
    expect_refused(r, "tenancy._as_owner by a role that does not own the table")
}

fn record_a_definition_the_table_does_not_have(db: &str) -> Outcome {
    let (_c, mut m) = mallory_db(db);
    m.batch_execute("CREATE TABLE m.r (id int PRIMARY KEY, organization_id uuid)").unwrap();
    let forgeries = [
        "jsonb_build_object('phase', 'converted', 'tenant_column', 'organization_id', 'column_type', 'uuid', \
           'old_default', 'NULL; ALTER ROLE mallory SUPERUSER; --')",
        "jsonb_build_object('phase', 'converted', 'tenant_column', 'organization_id', 'column_type', 'uuid; DROP TABLE x')",
        "jsonb_build_object('phase', 'converted', 'tenant_column', 'organization_id', 'column_type', 'uuid', \
           'fk_rewrites', jsonb_build_array(jsonb_build_object('old', 'r_fk', 'old_def', 'CHECK (true); ALTER ROLE mallory SUPERUSER', 'new', 'x')))",
        "jsonb_build_object('phase', 'converted', 'tenant_column', 'organization_id', 'column_type', 'uuid', \
           'indexes', jsonb_build_array(jsonb_build_object('name', 'i', 'replaces', jsonb_build_object('constraint', 'r_pkey', 'def', 'PRIMARY KEY (id); SELECT 1'))))",
    ];
    for f in forgeries {
        let sql = format!("SELECT tenancy._privileged('record_backfill', jsonb_build_object('relid', 'm.r'::regclass::oid, 'backfill', {f}))");
        if m.batch_execute(&sql).is_ok() {
            return Err(format!("a table owner recorded a definition its table does not have: {f}"));
        }
    }
    Ok(())
}

/// Names and default expressions put into the `--` comments of the DDL that isolation_sql and
/// enable_isolation return: a DBA runs that text (a migration file, psql's \gexec).
fn comment_breaking_names_in_generated_ddl(db: &str) -> Outcome {
    let (_c, mut m) = mallory_db(db);
    m.batch_execute(
        "CREATE TABLE m.\"t\nGRANT UPDATE ON tenancy.organizations TO mallory; --\" (
             id int PRIMARY KEY,
             organization_id uuid DEFAULT ('x\nGRANT UPDATE ON tenancy.organizations TO mallory; --')::text::uuid);
         ALTER TABLE m.\"t\nGRANT UPDATE ON tenancy.organizations TO mallory; --\" ENABLE ROW LEVEL SECURITY;
         CREATE POLICY mine ON m.\"t\nGRANT UPDATE ON tenancy.organizations TO mallory; --\" USING (true);",
    )
    .unwrap();
    let mut su = superuser_of(db);
    let ddl: String = su
        .query_one("SELECT tenancy.isolation_sql('m.\"t\nGRANT UPDATE ON tenancy.organizations TO mallory; --\"')", &[])
        .unwrap()
        .get(0);
    // The DBA applies it as it is (one query, as \gexec sends it).
    let _ = su.batch_execute(&ddl);
    if mallory_gained_update(db) {
        return Err(format!("the DDL isolation_sql printed ran a statement from a name or default:\n{ddl}"));
    }
    Ok(())
}

#[test]
fn attacks_on_a_managed_install() {
    let mut s = Suite::new();
    s.case("install: CREATE EXTENSION into a schema the owner planted", || {
        install_into_planted_schema("atk_plant", false)
    });
    s.case("install: planted schema in the same transaction", || install_into_planted_schema("atk_plant_tx", true));
    s.case("install: schema with CREATE granted to PUBLIC and default privileges", || {
        install_into_schema_with_grants("atk_grants")
    });
    s.case("install: the database owner creates or alters objects in schema tenancy", || {
        nobody_creates_objects_in_the_schema("atk_schema", None)
    });
    s.case("upgrade: ALTER EXTENSION UPDATE from 0.1.0 after planting", || upgrade_from("atk_up010", "0.1.0"));
    s.case("upgrade: ALTER EXTENSION UPDATE from 0.2.0 after planting", || upgrade_from("atk_up020", "0.2.0"));
    s.case("reports: an administrator's integrity report and lint run a table owner's policy", || {
        reports_run_owner_code("atk_reports")
    });
    s.case("fixes: lint fix SQL built from a column name", || fix_sql_from_evil_names("atk_fix"));
    s.case("fixes: the backfill's foreign key rewrite built from a column name", || {
        backfill_fk_rewrite_from_evil_names("atk_fk")
    });
    s.case("records: a forged backfill record run by a superuser's rollback", || forged_backfill_record("atk_recb"));
    s.case("records: a forged isolation record names another table", || forged_isolation_record("atk_reci"));
    s.case("fixes: pending_statements() from a forged record, run with \\gexec", || {
        forged_index_record_for_gexec("atk_gexec")
    });
    s.case("records: a table owner records definitions its table does not have", || {
        record_a_definition_the_table_does_not_have("atk_recdef")
    });
    s.case("fixes: line breaks in names and defaults inside the comments of isolation_sql", || {
        comment_breaking_names_in_generated_ddl("atk_comment")
    });
    s.case("records: internal table operations called directly", || {
        internal_table_operations_called_directly("atk_direct")
    });
    s.case("members: an admin of A makes B's user default to A", || {
        admin_captures_another_organizations_user("atk_cap")
    });
    s.case("members: a removed admin's invitation", || removed_admins_invitation("atk_inv"));
    s.case("memo: revocation during a REPEATABLE READ transaction", || {
        memo_outlives_revocation("atk_rr", "repeatable")
    });
    s.case("memo: revocation during a SERIALIZABLE transaction", || {
        memo_outlives_revocation("atk_ser", "serializable")
    });
    s.case("memo: revocation while a cursor holds an old snapshot", || memo_outlives_revocation_in_a_cursor("atk_cur"));
    s.case("memo: deactivation during a REPEATABLE READ transaction", || {
        deactivation_seen_next_transaction("atk_deact")
    });
    s.case("context: administrator's SECURITY DEFINER function with forged organization", || {
        admin_bypass_in_security_definer("atk_secdef")
    });
    s.case("privileges: TRIGGER and TRUNCATE on a tenant table for members", || {
        members_with_trigger_and_truncate("atk_trig", None)
    });
    s.case("partitions: a partition added after enable_isolation", || partition_added_after_isolation("atk_part"));
    s.case("log: anon writes migration_log", || anon_writes_the_log("atk_log"));
    s.case("memo: anon flushes every session's memo", || anon_flushes_every_memo("atk_flush"));
    s.case("public functions: garbage arguments as anon (no panic, no write)", || {
        public_functions_panic_or_write("atk_pub")
    });
    s.case("lint helpers: out-of-range input panics", || policy_parser_panics("atk_panic"));
    s.case("names: 63-byte table and column names through the backfill", || long_identifiers("atk_names"));
    s.case("catalog: tenant_tables readable by everyone", || tenant_tables_readable_by_all("atk_tt", None));
    s.case("catalog: slugs enumerable through REFERENCES", || slug_enumeration_by_references("atk_slug", None));
    s.case("reports: one table the administrator cannot read", || report_with_an_unreadable_table("atk_unread"));
    s.case("reports: a report that cannot see the rows says ok", || report_that_cannot_see_says_ok("atk_blind"));
    s.case("user ids: prefix, case and white-space variants of a member's text id", || {
        user_id_variants(
            "atk_uid_text",
            "text",
            "auth0|alice",
            &[
                "auth0|alic",
                "auth0|alice2",
                "AUTH0|ALICE",
                "Auth0|alice",
                " auth0|alice",
                "auth0|alice ",
                "auth0|alice\n",
                "\tauth0|alice",
                "auth0|alice\u{a0}",
            ],
        )
    });
    s.case("user ids: other spellings of a member's bigint id", || {
        user_id_variants("atk_uid_bigint", "bigint", "1", &["01", "+1", "1.0", "1e0", "0x1", "-1", "11", "1 1"])
    });
    s.case("user ids: a non-administrator changes the type of user ids", || {
        non_administrator_sets_user_id_type("atk_uid_admin")
    });
    s.case("user ids: a change of type while members exist (bigint 1 becomes text '1')", || {
        user_id_type_switch_with_members("atk_uid_switch")
    });
    s.case("operator: tenancy.operate() by the application role", || operate_as_the_app_role("atk_op_app", None));
    s.case("operator: tenancy.operate() by a table owner who is not an administrator", || {
        operate_as_a_table_owner("atk_op_owner")
    });
    s.case("operator: tenancy.operate() by an administrator with a user set", || operate_with_a_user("atk_op_user"));
    s.case("operator: an administrator's SECURITY DEFINER function enters it for its caller", || {
        operate_inside_an_administrators_security_definer("atk_op_secdef")
    });
    s.case("operator: entered through a setting a client writes (set_config of tenancy.*)", || {
        operate_by_a_setting("atk_op_guc", None)
    });
    s.case("operator: the mode outlives COMMIT", || operator_mode_outlives("atk_op_commit", "COMMIT"));
    s.case("operator: the mode outlives ROLLBACK", || operator_mode_outlives("atk_op_rollback", "ROLLBACK"));
    s.case("operator: the mode outlives ROLLBACK TO SAVEPOINT", || {
        operator_mode_outlives("atk_op_savepoint", "ROLLBACK TO SAVEPOINT s1")
    });
    s.case("operator: a table owner's SECURITY DEFINER function called by an operator", || {
        table_owners_security_definer_in_operator_mode("atk_op_owner_sd")
    });
    s.case("operator: the mode survives a user set later", || operator_mode_with_a_user_set_later("atk_op_later"));
    s.case("login: lookups allowed or read on a table one does not own", || {
        login_lookup_on_a_table_not_owned("atk_login_own")
    });
    s.case("login: roles the owner did not name, and a revoked one, read logins", || {
        login_lookup_by_others("atk_login_others")
    });
    s.case("login: a table owner's lookup runs its code as the superuser", || {
        login_lookup_runs_owner_code("atk_login_code")
    });
    s.finish();
}

/// The suite can fail: with a weakness planted, the same checks report the attack as successful.
#[test]
fn the_suite_catches_a_planted_weakness() {
    let planted: [(&str, Outcome); 6] = [
        (
            "CREATE on schema tenancy for the database owner",
            nobody_creates_objects_in_the_schema("atk_w_schema", Some("GRANT CREATE ON SCHEMA tenancy TO \"{owner}\"")),
        ),
        (
            "lint silenced for TEN016",
            members_with_trigger_and_truncate(
                "atk_w_trig",
                Some("INSERT INTO tenancy.lint_ignores (code, object, reason) VALUES ('TEN016', '*', 'planted')"),
            ),
        ),
        (
            "row-level security off on tenant_tables",
            tenant_tables_readable_by_all(
                "atk_w_tt",
                Some("ALTER TABLE tenancy.tenant_tables DISABLE ROW LEVEL SECURITY"),
            ),
        ),
        (
            "REFERENCES (slug) for PUBLIC",
            slug_enumeration_by_references(
                "atk_w_slug",
                Some("GRANT REFERENCES (slug) ON tenancy.organizations TO PUBLIC"),
            ),
        ),
        (
            "the application role made a tenancy administrator (UPDATE on tenancy.organizations)",
            operate_as_the_app_role("atk_w_op", Some("GRANT UPDATE ON tenancy.organizations TO \"{app}\"")),
        ),
        (
            "operating() read from a setting",
            operate_by_a_setting(
                "atk_w_guc",
                Some(
                    "CREATE OR REPLACE FUNCTION tenancy.operating() RETURNS boolean LANGUAGE sql STABLE \
                     AS $$ SELECT coalesce(current_setting('tenancy.operating', true), '') = 'on' $$",
                ),
            ),
        ),
    ];
    for (weakness, outcome) in planted {
        println!("planted {weakness}: {outcome:?}");
        assert!(outcome.is_err(), "with {weakness} planted, the attack must succeed");
    }
    println!("planted weaknesses: 6 caught");
}
