//! Schema `tenancy` exposed through PostgREST (Supabase: `pgrst.db_schemas` lists it): nothing
//! tenancy installs or generates may trip Supabase's database linter (splinter). These are the
//! properties its security lints check, asserted on tenancy's own objects whether or not they
//! belong to the extension (splinter skips extension members for some lints; we do not):
//!
//! * 0013 rls_disabled_in_public: a table readable by PUBLIC, anon or authenticated has RLS;
//! * 0008 rls_enabled_no_policy / 0007 policy_exists_rls_disabled: RLS on means a policy, a
//!   policy means RLS on;
//! * 0010 security_definer_view: a readable view is security_invoker;
//! * 0011 function_search_path_mutable: every function pins its search_path (procedures that
//!   COMMIT cannot have a SET clause: they schema-qualify everything, README);
//! * 0028/0029: no SECURITY DEFINER function at all;
//! * 0016/0017: no materialized view or foreign table;
//! * 0004 no_primary_key: every table has a primary key;
//! * 0024 rls_policy_always_true: no permissive always-true policy for writes;
//! * 0006 multiple_permissive_policies: the policies enable_isolation generates give no role two
//!   permissive policies for one command — except `tenancy_operator` (context mode, the default),
//!   which applies only to tenancy administrators (members of the catalog's owner), never to the
//!   application's roles, whose plans it leaves untouched; it is one InitPlan per statement.
use postgres::Client;
use tenancy_client_tests::*;

/// Every violation, one line each: (lint, object).
const VIOLATIONS: &str = r#"
WITH rel AS (
    SELECT c.oid, c.oid::regclass::text AS name, c.relkind, c.relrowsecurity,
           EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid) AS has_policy,
           has_table_privilege('anon', c.oid, 'SELECT') OR has_table_privilege('authenticated', c.oid, 'SELECT')
             OR EXISTS (SELECT 1 FROM aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
                         WHERE a.grantee = 0 AND a.privilege_type = 'SELECT') AS readable
      FROM pg_class c WHERE c.relnamespace = 'tenancy'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
), fn AS (
    SELECT p.oid::regprocedure::text AS name, p.prokind, p.prosecdef,
           EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) cfg WHERE cfg LIKE 'search_path=%') AS pinned
      FROM pg_proc p WHERE p.pronamespace = 'tenancy'::regnamespace
), pol AS (
    SELECT p.polrelid::regclass::text AS tbl, p.polname, p.polpermissive, p.polcmd, p.polroles,
           pg_get_expr(p.polqual, p.polrelid) AS qual, pg_get_expr(p.polwithcheck, p.polrelid) AS chk
      FROM pg_policy p
     WHERE p.polrelid IN (SELECT oid FROM rel) OR p.polrelid IN (SELECT relid FROM tenancy.tenant_tables)
        OR p.polname LIKE 'tenancy\_%'
)
SELECT '0013 rls_disabled_in_public', name FROM rel WHERE relkind IN ('r', 'p') AND readable AND NOT relrowsecurity
UNION ALL SELECT '0008 rls_enabled_no_policy', name FROM rel WHERE relkind IN ('r', 'p') AND relrowsecurity AND NOT has_policy
UNION ALL SELECT '0007 policy_exists_rls_disabled', name FROM rel WHERE relkind IN ('r', 'p') AND has_policy AND NOT relrowsecurity
UNION ALL SELECT '0010 security_definer_view', name FROM rel
           WHERE relkind = 'v' AND readable
             AND NOT coalesce((SELECT reloptions FROM pg_class WHERE oid = rel.oid), '{}')
                     && ARRAY['security_invoker=1', 'security_invoker=true', 'security_invoker=yes', 'security_invoker=on']
UNION ALL SELECT '0016/0017 materialized view or foreign table', name FROM rel WHERE relkind IN ('m', 'f')
UNION ALL SELECT '0004 no_primary_key', name FROM rel
           WHERE relkind IN ('r', 'p') AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = rel.oid AND i.indisprimary)
UNION ALL SELECT '0011 function_search_path_mutable', name FROM fn WHERE prokind <> 'p' AND NOT pinned
UNION ALL SELECT '0028/0029 security definer function', name FROM fn WHERE prosecdef
UNION ALL SELECT '0024 rls_policy_always_true', tbl || ' ' || polname FROM pol
           WHERE polpermissive AND polcmd IN ('a', 'w', 'd', '*')
             AND (lower(coalesce(qual, '')) IN ('true', '(true)') OR lower(coalesce(chk, '')) IN ('true', '(true)')
                  OR (polcmd = 'a' AND chk IS NULL) OR (polcmd IN ('w', 'd', '*') AND qual IS NULL))
UNION ALL SELECT '0006 multiple_permissive_policies', tbl || ' ' || r.rolname || ' ' || cmd FROM (
           SELECT pol.tbl, role_oid, cmd FROM pol,
                  unnest(CASE WHEN polroles = '{0}' THEN ARRAY(SELECT oid FROM pg_roles) ELSE polroles END) role_oid,
                  unnest(CASE polcmd WHEN '*' THEN '{r,a,w,d}'::text[] ELSE ARRAY[polcmd::text] END) cmd
            WHERE polpermissive AND tbl NOT LIKE 'tenancy.%' AND polname <> 'tenancy_operator'
            GROUP BY 1, 2, 3 HAVING count(*) > 1) m
           JOIN pg_roles r ON r.oid = m.role_oid
          WHERE r.rolname NOT LIKE 'pg\_%' AND NOT r.rolbypassrls
ORDER BY 1, 2"#;

fn violations(c: &mut Client) -> Vec<String> {
    c.query(VIOLATIONS, &[])
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect()
}

/// Supabase's roles, a non-superuser database owner who installed tenancy, tenant tables isolated
/// the default way, for the API role only, and next to a hand-written policy.
fn exposed_db(db: &str) -> Client {
    let mut su = superuser();
    su.batch_execute(
        "DO $$ BEGIN CREATE ROLE anon NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
         DO $$ BEGIN CREATE ROLE authenticated NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;",
    )
    .unwrap();
    let mut c = two_tenant_db(db);
    superuser().batch_execute(&format!("ALTER DATABASE \"{db}\" SET pgrst.db_schemas = 'public, tenancy'")).unwrap();
    c.batch_execute(
        "CREATE TABLE public.shipments (id int PRIMARY KEY, organization_id uuid NOT NULL REFERENCES tenancy.organizations (id));
         CREATE TABLE public.documents (id int PRIMARY KEY, organization_id uuid NOT NULL REFERENCES tenancy.organizations (id),
                                        author uuid);
         CREATE TABLE public.notes (id int PRIMARY KEY, organization_id uuid NOT NULL REFERENCES tenancy.organizations (id),
                                    author uuid);
         CREATE POLICY own_notes ON public.notes FOR SELECT TO authenticated USING (author = (SELECT tenancy.current_user_id()));
         SELECT tenancy.enable_isolation('public.shipments');
         SELECT tenancy.enable_isolation('public.documents', roles => '{authenticated}');
         SELECT tenancy.enable_isolation('public.notes', roles => '{authenticated}');
         GRANT SELECT ON public.shipments, public.documents, public.notes TO anon, authenticated;",
    )
    .unwrap();
    c
}

#[test]
fn nothing_tenancy_installs_trips_supabases_security_lints() {
    let db = "exposure_lints";
    let mut c = exposed_db(db);
    let found = violations(&mut c);
    assert!(found.is_empty(), "Supabase linter findings on tenancy's objects:\n{}", found.join("\n"));
    let mut su = superuser_of(db);
    assert!(violations(&mut su).is_empty(), "as a superuser too");
    println!("exposure: schema tenancy exposed, 0 findings of lints 0004, 0006, 0007, 0008, 0010, 0011, 0013, 0016, 0017, 0024, 0028, 0029");
}

/// The check can fail: each planted weakness is reported.
#[test]
fn the_exposure_check_catches_a_planted_weakness() {
    let db = "exposure_planted";
    let planted = [
        ("ALTER TABLE tenancy.roles DISABLE ROW LEVEL SECURITY", "0013 rls_disabled_in_public tenancy.roles"),
        (
            "ALTER TABLE tenancy.lint_ignores DISABLE ROW LEVEL SECURITY",
            "0013 rls_disabled_in_public tenancy.lint_ignores",
        ),
        ("DROP POLICY roles_readable_by_all ON tenancy.roles", "0008 rls_enabled_no_policy tenancy.roles"),
        (
            "ALTER VIEW tenancy.backfill_progress RESET (security_invoker)",
            "0010 security_definer_view tenancy.backfill_progress",
        ),
        (
            "ALTER FUNCTION tenancy.operating() RESET search_path",
            "0011 function_search_path_mutable tenancy.operating()",
        ),
        (
            "CREATE POLICY extra ON public.shipments FOR SELECT USING (true)",
            "0006 multiple_permissive_policies shipments",
        ),
    ];
    for (plant, expected) in planted {
        exposed_db(db);
        superuser_of(db).batch_execute(plant).unwrap();
        let found = violations(&mut superuser_of(db));
        assert!(found.iter().any(|f| f.starts_with(expected)), "planted {plant}: expected {expected}, found {found:?}");
    }
    println!("exposure: {} planted weaknesses caught", planted.len());
}
