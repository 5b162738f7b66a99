//! Operator mode (`tenancy.operate`): the database owner of a managed install — not superuser, no
//! BYPASSRLS — who installed tenancy runs the runbooks' validation queries after FORCE ROW LEVEL
//! SECURITY and gets real answers in operator mode, and nothing without it. The attacks on the
//! mode (who may not enter it, how it ends) are in attacks.rs.
use postgres::Client;
use tenancy_client_tests::*;

const DB: &str = "operator_runbook";

/// Seed 001's shape: `client_id` columns, users and uploads of two clients.
fn runbook_001_db() -> Client {
    let mut c = two_tenant_db(DB);
    c.batch_execute(&format!(
        "CREATE TABLE public.users (id int PRIMARY KEY, email text NOT NULL UNIQUE,
                                    client_id uuid NOT NULL REFERENCES tenancy.organizations (id));
         CREATE TABLE public.uploads (id int PRIMARY KEY, filename text,
                                      client_id uuid NOT NULL REFERENCES tenancy.organizations (id));
         CREATE INDEX ON public.users (client_id, id);
         CREATE INDEX ON public.uploads (client_id, id);
         INSERT INTO public.users SELECT g, 'u' || g || '@example.com',
                CASE WHEN g <= 3 THEN '{ORG_A}'::uuid ELSE '{ORG_B}'::uuid END FROM generate_series(1, 5) g;
         INSERT INTO public.uploads SELECT g, 'f' || g,
                CASE WHEN g <= 70 THEN '{ORG_A}'::uuid ELSE '{ORG_B}'::uuid END FROM generate_series(1, 100) g;
         ANALYZE public.users, public.uploads;
         SELECT tenancy.enable_isolation('public.users', 'client_id');
         -- Supabase-style: policies for the API role only (the administrator then gets tenancy_operator).
         SELECT tenancy.enable_isolation('public.uploads', 'client_id', roles => '{{{DB}_app}}');
         GRANT SELECT, INSERT, UPDATE, DELETE ON public.users, public.uploads TO \"{DB}_app\";"
    ))
    .unwrap();
    c
}

/// The organization summary (seed 000's, on seed 001's tables), by slug.
const SUMMARY: &str = "SELECT o.slug, count(DISTINCT up.id), count(DISTINCT u.id)
                         FROM tenancy.organizations o
                         LEFT JOIN public.uploads up ON up.client_id = o.id
                         LEFT JOIN public.users u ON u.client_id = o.id
                        GROUP BY o.slug ORDER BY o.slug";
/// Counts per organization, and the runbook's NULL check.
const PER_ORG: &str = "SELECT client_id::text, count(*) FROM public.uploads GROUP BY 1 ORDER BY 1";
const NULLS: &str = "SELECT (SELECT count(*) FROM public.users WHERE client_id IS NULL)
                          + (SELECT count(*) FROM public.uploads WHERE client_id IS NULL)";

fn summary(c: &mut impl postgres::GenericClient) -> Vec<(String, i64, i64)> {
    c.query(SUMMARY, &[]).unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
}

fn per_org(c: &mut impl postgres::GenericClient) -> Vec<(String, i64)> {
    c.query(PER_ORG, &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[test]
fn the_database_owner_runs_the_runbook_validation_in_operator_mode_and_sees_nothing_without_it() {
    let mut c = runbook_001_db();
    let (sup, bypass): (bool, bool) = c
        .query_one("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user", &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(!sup && !bypass, "the owner must be an ordinary managed-install owner");

    // Without operator mode: the "organization summary 0|0, 0 users".
    let blind = summary(&mut c);
    assert_eq!(blind, vec![("org-a".into(), 0, 0), ("org-b".into(), 0, 0)], "without operate()");
    assert!(per_org(&mut c).is_empty());

    // In operator mode: real answers, and the integrity report saw every row.
    let mut tx = c.transaction().unwrap();
    let entered: bool = tx.query_one("SELECT tenancy.operate('runbook 001 validation')", &[]).unwrap().get(0);
    assert!(entered);
    assert!(tx.query_one("SELECT tenancy.operating()", &[]).unwrap().get::<_, bool>(0));
    assert_eq!(summary(&mut tx), vec![("org-a".into(), 70, 3), ("org-b".into(), 30, 2)]);
    assert_eq!(per_org(&mut tx), vec![(ORG_A.into(), 70), (ORG_B.into(), 30)]);
    assert_eq!(tx.query_one(NULLS, &[]).unwrap().get::<_, i64>(0), 0);
    let report = tx
        .query("SELECT table_name, total_rows, saw_every_row, ok FROM tenancy.validate_client_data_integrity()", &[])
        .unwrap();
    for r in &report {
        let (t, n, saw, ok): (String, i64, bool, bool) = (r.get(0), r.get(1), r.get(2), r.get(3));
        assert!(saw && ok, "{t}: saw_every_row {saw}, ok {ok}");
        assert_eq!(n, if t == "public.users" { 5 } else { 100 }, "{t}");
    }
    // A fix: move one upload to the other organization (its foreign key keeps it in an existing one).
    tx.batch_execute(&format!("UPDATE public.uploads SET client_id = '{ORG_B}' WHERE id = 1")).unwrap();
    assert_eq!(per_org(&mut tx), vec![(ORG_A.into(), 69), (ORG_B.into(), 31)]);
    tx.batch_execute("UPDATE public.uploads SET client_id = client_id WHERE id = 1").unwrap();
    let bad = tx.execute("UPDATE public.uploads SET client_id = gen_random_uuid() WHERE id = 2", &[]);
    assert!(bad.is_err(), "an operator moved a row to an organization that does not exist");
    drop(tx); // ROLLBACK: the fix, the log row and the mode are gone

    // It was logged: who (session user and role), when, why.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("SELECT tenancy.operate('logged check')").unwrap();
    tx.commit().unwrap();
    let row = c
        .query_one(
            "SELECT actor::text, details->>'reason', details->>'session_user', details->>'current_user',
                    started_at IS NOT NULL, count(*) OVER ()
               FROM tenancy.migration_log WHERE operation = 'operate' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap();
    let owner = format!("{DB}_owner");
    assert_eq!(row.get::<_, String>(0), owner);
    assert_eq!(row.get::<_, String>(1), "logged check");
    assert_eq!(row.get::<_, String>(2), owner);
    assert_eq!(row.get::<_, String>(3), owner);
    assert!(row.get::<_, bool>(4));
    assert_eq!(row.get::<_, i64>(5), 1, "the rolled-back entry left no log row");

    // And after COMMIT, nothing again.
    assert_eq!(summary(&mut c), blind);
    println!("operator mode: runbook 001 validation as the database owner: {:?} without, real counts with", blind);
}

#[test]
fn the_application_roles_keep_the_tenant_index_condition() {
    let db = "operator_plans";
    let mut c = two_tenant_db(db);
    let app = format!("{db}_app");
    c.batch_execute(&format!(
        "CREATE TABLE public.items (id int PRIMARY KEY, organization_id uuid NOT NULL, body text);
         CREATE INDEX ON public.items (organization_id, id);
         INSERT INTO public.items SELECT g, CASE WHEN g % 2 = 0 THEN '{ORG_A}'::uuid ELSE '{ORG_B}'::uuid END, 'x'
           FROM generate_series(1, 20000) g;
         CREATE TABLE public.api_items (LIKE public.items INCLUDING ALL);
         INSERT INTO public.api_items SELECT * FROM public.items;
         ANALYZE public.items, public.api_items;
         SELECT tenancy.enable_isolation('public.items');
         SELECT tenancy.enable_isolation('public.api_items', roles => '{{{app}}}');
         GRANT SELECT ON public.items, public.api_items TO \"{app}\";"
    ))
    .unwrap();
    let operator_policies = |c: &mut Client, t: &str| -> Vec<String> {
        c.query(
            &format!(
                "SELECT array_to_string(polroles::regrole[], ',') FROM pg_policy
                  WHERE polrelid = '{t}'::regclass AND polname = 'tenancy_operator'"
            ),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    // Context mode (the default) names one organization per statement: one policy, for the catalog
    // owner only, whether the policies are for PUBLIC or for the API role.
    assert_eq!(operator_policies(&mut c, "public.items"), vec![format!("{db}_owner")]);
    assert_eq!(operator_policies(&mut c, "public.api_items"), vec![format!("{db}_owner")]);
    // Membership mode for PUBLIC: the lookups open every organization to the operator, no policy.
    c.batch_execute("SELECT tenancy.enable_isolation('public.items', mode => 'membership')").unwrap();
    assert!(operator_policies(&mut c, "public.items").is_empty());
    c.batch_execute("SELECT tenancy.enable_isolation('public.items', mode => 'context')").unwrap();
    let mut app_c = app_session(db);
    let mut tx = app_c.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
    for t in ["public.items", "public.api_items"] {
        for q in [format!("SELECT * FROM {t} WHERE id = 42"), format!("SELECT * FROM {t}")] {
            let plan: Vec<String> =
                tx.query(&format!("EXPLAIN (COSTS OFF) {q}"), &[]).unwrap().iter().map(|r| r.get(0)).collect();
            let text = plan.join("\n");
            // The operator policy is not the app role's: its permissive side stays the bare
            // equality, an index condition on the tenant column (the boundary's operator arm,
            // `OR (SELECT tenancy.operating())`, is a filter read once per statement).
            assert!(!text.contains("SubPlan"), "{q}: evaluated per row:\n{text}");
            let tenant_eq = |l: &&str| l.contains("organization_id = $") || l.contains("organization_id = (InitPlan");
            assert!(
                text.lines().any(|l| (l.contains("Cond:") || l.contains("Filter:")) && tenant_eq(&l)),
                "{q}: no condition organization_id = <the context>:\n{text}"
            );
            if q.contains("WHERE") {
                assert!(text.contains("Index Cond"), "{q}: no index condition:\n{text}");
            }
            println!("app role plan of {q}:\n{text}");
        }
    }
    drop(tx);
    // The operator reads both tables whole.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("SELECT tenancy.operate('plans test')").unwrap();
    for t in ["public.items", "public.api_items"] {
        let n: i64 = tx.query_one(&format!("SELECT count(*) FROM {t}"), &[]).unwrap().get(0);
        assert_eq!(n, 20000, "{t} in operator mode");
    }
    drop(tx);
    // disable_isolation removes exactly what enable_isolation created, the operator policy too.
    c.batch_execute("SELECT tenancy.disable_isolation('public.api_items')").unwrap();
    let left: i64 = c
        .query_one("SELECT count(*) FROM pg_policy WHERE polrelid = 'public.api_items'::regclass", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

/// Runbook 001's own queries, as written, with schema tenancy on the search path (README: the
/// runbooks' queries), and set_organization by slug.
#[test]
fn the_runbook_001_queries_run_as_written() {
    let db = "operator_runbook_queries";
    let mut c = two_tenant_db(db);
    c.batch_execute(
        "CREATE TABLE public.email_logs (id int PRIMARY KEY, body text);
         INSERT INTO public.email_logs SELECT g, 'x' FROM generate_series(1, 50) g;",
    )
    .unwrap();
    // On its own: a procedure that COMMITs cannot run inside a multi-statement batch.
    c.batch_execute(&format!(
        "CALL tenancy.backfill('public.email_logs', organization_id => '{ORG_A}', tenant_column => 'client_id')"
    ))
    .unwrap();
    c.batch_execute("SET search_path = public, tenancy").unwrap();
    // The migration log as the runbook reads it: phase (the backfill's), operation, status, details, created_at.
    let q = "SELECT phase, operation, status, details, created_at FROM migration_log WHERE phase = 'phase_1' ORDER BY created_at DESC";
    assert_eq!(c.query(q, &[]).unwrap().len(), 0);
    let phases: Vec<String> = c
        .query("SELECT DISTINCT phase FROM migration_log WHERE phase IS NOT NULL ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // A fixed organization on a new column: the metadata-only path (column_added, no filling).
    assert!(
        ["column_added", "fk_validated", "not_null"].iter().all(|p| phases.contains(&p.to_string())),
        "backfill phases in migration_log.phase: {phases:?}"
    );
    c.query("SELECT * FROM migration_log WHERE operation LIKE '%client_id%' AND status = 'failed'", &[]).unwrap();
    assert_eq!(c.query("SELECT * FROM organizations WHERE slug = 'org-a'", &[]).unwrap().len(), 1);
    let report = c.query("SELECT validate_client_data_integrity()", &[]).unwrap();
    assert_eq!(report.len(), 1, "one registered table");
    c.query(
        "SELECT table_name, column_name FROM information_schema.columns WHERE column_name = 'client_id' AND table_schema = 'public'",
        &[],
    )
    .unwrap();

    // set_organization by slug, and by an untyped uuid literal as before.
    let mut app = app_session(db);
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
    let by_slug: String = tx.query_one("SELECT tenancy.set_organization('org-a')::text", &[]).unwrap().get(0);
    assert_eq!(by_slug, ORG_A);
    let by_id: String = tx.query_one(&format!("SELECT tenancy.set_organization('{ORG_A}')::text"), &[]).unwrap().get(0);
    assert_eq!(by_id, ORG_A);
    let current: String = tx.query_one("SELECT tenancy.current_organization_slug()", &[]).unwrap().get(0);
    assert_eq!(current, "org-a");
    drop(tx);
    for slug in ["org-b", "no-such-org"] {
        let mut tx = app.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL tenancy.user_id = '{USER_A}'")).unwrap();
        let r = tx.query_one(&format!("SELECT tenancy.set_organization('{slug}')"), &[]);
        assert_eq!(sqlstate(r), "42501", "a member of A chooses {slug}: the same refusal whether it exists or not");
    }
}
