//! Upgrades: a database on the previous release, with tenants and an isolated table, runs
//! `ALTER EXTENSION tenancy UPDATE`; its extension objects must then equal a fresh install's,
//! and its tenants stay isolated.
use std::process::Command;

use tenancy_client_tests::*;

/// The earlier releases, whose install scripts ship in sql/versions/ with an upgrade path to
/// the current one.
const PREVIOUS: &[&str] = &["0.1.0", "0.2.0"];

/// Everything about the extension's objects that an upgrade must reproduce, one line each,
/// sorted: members, function definitions with their comments, owners and grants, columns,
/// constraints, indexes, triggers, policies, views, table flags, grants and comments, and the
/// tables pg_dump keeps.
const SHAPE: &str = r#"
WITH ext AS (SELECT oid, extconfig, extcondition FROM pg_extension WHERE extname = 'tenancy'),
rels AS (SELECT c.* FROM pg_class c WHERE c.relnamespace = 'tenancy'::regnamespace)
SELECT line FROM (
  SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
    FROM pg_depend d, ext WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
  UNION ALL
  SELECT 'function ' || p.oid::regprocedure || ' owner=' || p.proowner::regrole || ' acl=' || coalesce(p.proacl::text, '-')
         || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '-') || E'\n' || pg_get_functiondef(p.oid)
    FROM pg_proc p WHERE p.pronamespace = 'tenancy'::regnamespace
  UNION ALL
  SELECT 'column ' || r.oid::regclass || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
         || ' notnull=' || a.attnotnull || ' default=' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '-')
         || ' comment=' || coalesce(col_description(r.oid, a.attnum), '-') || ' acl=' || coalesce(a.attacl::text, '-')
    FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef ad ON ad.adrelid = r.oid AND ad.adnum = a.attnum
  UNION ALL
  SELECT 'relation ' || r.oid::regclass || ' kind=' || r.relkind::text || ' owner=' || r.relowner::regrole
         || ' acl=' || coalesce(r.relacl::text, '-') || ' rls=' || r.relrowsecurity || '/' || r.relforcerowsecurity
         || ' comment=' || coalesce(obj_description(r.oid, 'pg_class'), '-')
         || CASE WHEN r.relkind = 'v' THEN E'\n' || pg_get_viewdef(r.oid) ELSE '' END
    FROM rels r
  UNION ALL
  SELECT 'constraint ' || c.conrelid::regclass || ' ' || c.conname || ' ' || pg_get_constraintdef(c.oid)
    FROM pg_constraint c JOIN rels r ON r.oid = c.conrelid
  UNION ALL
  SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN rels r ON r.oid = i.indrelid
  UNION ALL
  SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
    FROM pg_trigger t JOIN rels r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal
  UNION ALL
  SELECT 'policy ' || p.tablename || ' ' || p.policyname || ' ' || p.permissive || ' ' || p.roles::text || ' ' || p.cmd
         || ' using=' || coalesce(p.qual, '-') || ' check=' || coalesce(p.with_check, '-')
    FROM pg_policies p WHERE p.schemaname = 'tenancy'
  UNION ALL
  SELECT 'type ' || t.oid::regtype FROM pg_type t WHERE t.typnamespace = 'tenancy'::regnamespace AND t.typtype <> 'b'
     AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid)
  UNION ALL
  SELECT 'dumped ' || (SELECT string_agg(x::regclass::text || ' ' || coalesce(y, ''), ', ' ORDER BY x::regclass::text)
                         FROM unnest(ext.extconfig, ext.extcondition) u(x, y)) FROM ext
  UNION ALL
  SELECT 'schema acl=' || coalesce(nspacl::text, '-') || ' owner=' || nspowner::regrole FROM pg_namespace WHERE nspname = 'tenancy'
) s(line) ORDER BY line
"#;

fn shape(c: &mut postgres::Client) -> Vec<String> {
    c.query(SHAPE, &[]).unwrap().iter().map(|r| r.get(0)).collect()
}

fn version(c: &mut postgres::Client) -> String {
    c.query_one("SELECT extversion FROM pg_extension WHERE extname = 'tenancy'", &[]).unwrap().get(0)
}

/// A database `db` owned by `owner` (not superuser), with tenancy at `version` (None: default).
fn db_with(db: &str, owner: &str, version: Option<&str>) -> postgres::Client {
    role(owner, "");
    let mut su = superuser();
    su.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")).unwrap();
    su.batch_execute(&format!("CREATE DATABASE \"{db}\" OWNER \"{owner}\"")).unwrap();
    let mut c = connect(owner, db);
    match version {
        Some(v) => c.batch_execute(&format!("CREATE EXTENSION tenancy VERSION '{v}'")).unwrap(),
        None => c.batch_execute("CREATE EXTENSION tenancy").unwrap(),
    }
    c
}

#[test]
fn alter_extension_update_from_0_1_0_gives_a_fresh_install_and_tenants_stay_isolated() {
    upgrade_gives_a_fresh_install(PREVIOUS[0]);
}

#[test]
fn alter_extension_update_from_0_2_0_gives_a_fresh_install_and_tenants_stay_isolated() {
    upgrade_gives_a_fresh_install(PREVIOUS[1]);
}

fn upgrade_gives_a_fresh_install(previous: &str) {
    let tag = previous.replace('.', "");
    let (owner, app, old_db, fresh_db) =
        (format!("upg_owner_{tag}"), format!("upg_app_{tag}"), format!("upg_old_{tag}"), format!("upg_fresh_{tag}"));
    let owner = owner.as_str();
    let mut old = db_with(&old_db, owner, Some(previous));
    assert_eq!(version(&mut old), previous);
    let default: String = old
        .query_one("SELECT default_version FROM pg_available_extensions WHERE name = 'tenancy'", &[])
        .unwrap()
        .get(0);
    assert_ne!(default, previous, "the build under test is a newer version than {previous}");

    // Life on the previous release: tenants, members, an invitation, an isolated table.
    role(&app, "");
    grant_role(&app, owner);
    old.batch_execute(&format!(
        "SELECT tenancy.create_organization('Org A', 'org-a', '{ORG_A}', '{{}}', '{USER_A}');
         SELECT tenancy.create_organization('Org B', 'org-b', '{ORG_B}', '{{}}', '{USER_B}');
         SELECT tenancy.create_invitation('{ORG_A}', 'new@example.com', 'member', interval '7 days');
         CREATE TABLE notes (id bigint PRIMARY KEY, organization_id uuid NOT NULL REFERENCES tenancy.organizations, body text);
         INSERT INTO notes SELECT g, CASE WHEN g % 3 = 0 THEN '{ORG_B}'::uuid ELSE '{ORG_A}'::uuid END, 'note ' || g
           FROM generate_series(1, 300) g;
         CREATE INDEX ON notes (organization_id, id);
         SELECT tenancy.enable_isolation('notes');
         GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO {app};"
    ))
    .unwrap();
    let before: Vec<String> = old
        .query("SELECT row(o.*)::text FROM tenancy.organizations o ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();

    old.batch_execute("ALTER EXTENSION tenancy UPDATE").unwrap();
    assert_eq!(version(&mut old), default);

    // The upgraded extension is exactly a fresh install of the new version.
    let mut fresh = db_with(&fresh_db, owner, None);
    let (got, want) = (shape(&mut old), shape(&mut fresh));
    let missing: Vec<&String> = want.iter().filter(|l| !got.contains(l)).collect();
    let extra: Vec<&String> = got.iter().filter(|l| !want.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "upgraded schema differs from a fresh install.\nmissing after the upgrade:\n{missing:#?}\nleft over by the upgrade:\n{extra:#?}"
    );
    assert!(want.len() > 100, "the comparison covers the whole extension ({} lines)", want.len());

    // The data came through, and still isolates.
    let after: Vec<String> = old
        .query("SELECT row(o.*)::text FROM tenancy.organizations o ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(before, after);
    let mut app_conn = connect(owner, &old_db);
    app_conn.batch_execute(&format!("SET ROLE {app}")).unwrap();
    let mut tx = app_conn.transaction().unwrap();
    let none: i64 = tx.query_one("SELECT count(*) FROM notes", &[]).unwrap().get(0);
    assert_eq!(none, 0, "no context, no rows");
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'; SELECT tenancy.set_organization('{ORG_A}')"))
        .unwrap();
    let r = tx
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE organization_id <> tenancy.current_organization_id()) FROM notes",
            &[],
        )
        .unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (200, 0), "organization A sees its 200 notes only");
    let moved = tx.execute(&format!("UPDATE notes SET organization_id = '{ORG_B}' WHERE id = 1"), &[]);
    assert_eq!(sqlstate(moved), "42501", "a row cannot be moved to another tenant");
    drop(tx);

    // 0.3.0's default mode is context; a table isolated before (membership, the old default) keeps
    // its mode when enable_isolation is called again without one.
    let again: String = old.query_one("SELECT tenancy.enable_isolation('notes')", &[]).unwrap().get(0);
    assert!(again.contains("nothing to do"), "enable_isolation without mode changed a {previous} table:\n{again}");
    let mode: String =
        old.query_one("SELECT mode FROM tenancy.tenant_tables WHERE relid = 'notes'::regclass", &[]).unwrap().get(0);
    assert_eq!(mode, "membership");
}

#[test]
fn upgrade_scripts_refuse_to_run_by_hand() {
    let pg_config = std::env::var("TENANCY_PG_CONFIG").unwrap_or_else(|_| "pg_config".into());
    let sharedir = String::from_utf8(Command::new(pg_config).arg("--sharedir").output().unwrap().stdout).unwrap();
    let dir = std::path::Path::new(sharedir.trim()).join("extension");
    let scripts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with("tenancy--") && name.matches("--").count() == 2
        })
        .collect();
    for previous in PREVIOUS {
        assert!(
            scripts.iter().any(|p| p.to_string_lossy().contains(&format!("tenancy--{previous}--"))),
            "an upgrade script from {previous} is installed in {}",
            dir.display()
        );
    }
    let mut su = superuser();
    su.batch_execute("DROP DATABASE IF EXISTS upg_by_hand WITH (FORCE)").unwrap();
    su.batch_execute("CREATE DATABASE upg_by_hand").unwrap();
    // With the schema there, a script that ran would leave objects behind (its plpgsql ones).
    connect("postgres", "upg_by_hand").batch_execute("CREATE SCHEMA tenancy").unwrap();
    for script in scripts {
        let out = Command::new("psql")
            .args(["-X", "-h", "127.0.0.1", "-p", &port().to_string(), "-U", "postgres", "-d", "upg_by_hand", "-f"])
            .arg(&script)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("ALTER EXTENSION tenancy UPDATE"), "{}: {text}", script.display());
        let mut c = connect("postgres", "upg_by_hand");
        let created: i64 = c
            .query_one("SELECT count(*) FROM pg_proc WHERE pronamespace = 'tenancy'::regnamespace", &[])
            .unwrap()
            .get(0);
        assert_eq!(created, 0, "{} created objects when run by hand", script.display());
    }
}

/// A backfill stopped halfway under 0.2.0 (its record in 0.2.0's jsonb) resumes after `ALTER
/// EXTENSION tenancy UPDATE`, whose backfill reads the record as `tenancy.backfill_state`, and
/// finishes with every row given its parent's organization.
#[test]
fn a_backfill_stopped_under_0_2_0_resumes_after_the_update() {
    let owner = "upg_owner_resume";
    let mut c = db_with("upg_resume", owner, Some("0.2.0"));
    c.batch_execute(&format!(
        "SELECT tenancy.create_organization('Org A', 'org-a', '{ORG_A}', '{{}}', '{USER_A}');
         SELECT tenancy.create_organization('Org B', 'org-b', '{ORG_B}', '{{}}', '{USER_B}');
         CREATE TABLE uploads (id bigint PRIMARY KEY, organization_id uuid NOT NULL REFERENCES tenancy.organizations, name text);
         INSERT INTO uploads SELECT g, CASE WHEN g % 2 = 0 THEN '{ORG_B}'::uuid ELSE '{ORG_A}'::uuid END, 'u' || g
           FROM generate_series(1, 100) g;
         CREATE INDEX ON uploads (organization_id, id);
         SELECT tenancy.register_table('uploads');
         CREATE TABLE logs (id bigint PRIMARY KEY, upload_id bigint NOT NULL REFERENCES uploads, msg text);
         INSERT INTO logs SELECT g, 1 + g % 100, 'm' || g FROM generate_series(1, 20000) g;"
    ))
    .unwrap();
    // Cancelled while filling (each batch of 100 rows COMMITs, 50 ms apart).
    // (One statement per call: a CALL that COMMITs cannot be part of a multi-statement string.)
    c.batch_execute("SET statement_timeout = '1500ms'").unwrap();
    let stopped =
        c.batch_execute("CALL tenancy.backfill('logs', parent => 'uploads', batch_size => 100, pause => '50 ms')");
    assert_eq!(sqlstate(stopped), "57014", "the CALL was cancelled by its statement_timeout");
    c.batch_execute("RESET statement_timeout").unwrap();
    let (phase, done): (String, i64) = {
        let r = c
            .query_one(
                "SELECT details->'backfill'->>'phase', (details->'backfill'->'fill'->>'rows_done')::bigint
                   FROM tenancy.tenant_tables WHERE relid = 'logs'::regclass",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(phase, "filling", "stopped while filling");
    assert!(done > 0 && done < 20000, "stopped halfway: {done} rows filled");

    c.batch_execute("ALTER EXTENSION tenancy UPDATE").unwrap();
    assert_ne!(version(&mut c), "0.2.0");
    c.batch_execute("CALL tenancy.backfill('logs', parent => 'uploads', build_indexes => true)").unwrap();
    let r = c
        .query_one(
            "SELECT b.phase, b.rows_done,
                    (SELECT count(*) FROM logs l JOIN uploads u ON u.id = l.upload_id
                      WHERE l.organization_id IS DISTINCT FROM u.organization_id)
               FROM tenancy.backfill_progress b WHERE b.table_name = 'logs'",
            &[],
        )
        .unwrap();
    let (phase, rows, wrong): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
    println!(
        "upgrade: a 0.2.0 backfill stopped at {done} of 20000 rows resumed after the update: {phase}, {rows} rows"
    );
    assert_eq!(
        (phase.as_str(), rows, wrong),
        ("converted", 20000, 0),
        "resumed and finished, every row its parent's organization"
    );
}
