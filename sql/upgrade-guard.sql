-- tenancy upgrade guard: the first statement of every upgrade script (sql/versions/
-- tenancy--A--B.sql starts with exactly this block; scripts/test.sh checks it).
--
-- ALTER EXTENSION tenancy UPDATE runs the upgrade scripts as a superuser (the bootstrap
-- superuser on a trusted install) with schema tenancy on the search_path. Releases up to 0.2.0
-- left that schema to the installing role, which could have added operators or functions that
-- beat pg_catalog's in overload resolution. So, before anything else, with every operator and
-- function below schema-qualified:
--   1. no other transaction of a non-superuser role that may create objects in the schema is
--      open (it could commit an object after the check);
--   2. the schema is taken over by the superuser running the update: nobody else can create
--      objects in it from then on;
--   3. every object in the schema must belong to the extension (or be part of an object that
--      does: an index, a row type), CREATE on the schema is granted to nobody else, and there are
--      no default privileges in it. Otherwise the update is refused, and nothing is changed.
DO $guard$
DECLARE
    v_nsp      oid;
    v_ext      oid;
    v_objects  text;
BEGIN
    SELECT n.oid INTO v_nsp FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) 'tenancy';
    SELECT e.oid INTO v_ext FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'tenancy';
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                WHERE a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
                  AND a.backend_xid IS NOT NULL
                  AND a.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
                  AND pg_catalog.has_schema_privilege(a.usesysid, v_nsp, 'CREATE')
                  AND NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r
                            WHERE r.oid OPERATOR(pg_catalog.=) a.usesysid)) THEN
        RAISE EXCEPTION 'tenancy: another transaction that may create objects in schema tenancy is open'
            USING ERRCODE = 'object_in_use',
                  HINT = 'Run ALTER EXTENSION tenancy UPDATE again once the other sessions of the database owner have committed.';
    END IF;
    EXECUTE 'ALTER SCHEMA tenancy OWNER TO CURRENT_USER';
    WITH objs(classid, objid, what) AS (
        SELECT 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid, c.oid, pg_catalog.concat('relation ', c.relname)
          FROM pg_catalog.pg_class c WHERE c.relnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass::pg_catalog.oid, p.oid, pg_catalog.concat('function ', p.proname)
          FROM pg_catalog.pg_proc p WHERE p.pronamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_type'::pg_catalog.regclass::pg_catalog.oid, t.oid, pg_catalog.concat('type ', t.typname)
          FROM pg_catalog.pg_type t WHERE t.typnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_operator'::pg_catalog.regclass::pg_catalog.oid, o.oid, pg_catalog.concat('operator ', o.oprname)
          FROM pg_catalog.pg_operator o WHERE o.oprnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_collation'::pg_catalog.regclass::pg_catalog.oid, c.oid, pg_catalog.concat('collation ', c.collname)
          FROM pg_catalog.pg_collation c WHERE c.collnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_conversion'::pg_catalog.regclass::pg_catalog.oid, c.oid, pg_catalog.concat('conversion ', c.conname)
          FROM pg_catalog.pg_conversion c WHERE c.connamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_opclass'::pg_catalog.regclass::pg_catalog.oid, c.oid, pg_catalog.concat('operator class ', c.opcname)
          FROM pg_catalog.pg_opclass c WHERE c.opcnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_opfamily'::pg_catalog.regclass::pg_catalog.oid, f.oid, pg_catalog.concat('operator family ', f.opfname)
          FROM pg_catalog.pg_opfamily f WHERE f.opfnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_ts_config'::pg_catalog.regclass::pg_catalog.oid, c.oid, pg_catalog.concat('text search configuration ', c.cfgname)
          FROM pg_catalog.pg_ts_config c WHERE c.cfgnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_ts_dict'::pg_catalog.regclass::pg_catalog.oid, d.oid, pg_catalog.concat('text search dictionary ', d.dictname)
          FROM pg_catalog.pg_ts_dict d WHERE d.dictnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_ts_parser'::pg_catalog.regclass::pg_catalog.oid, p.oid, pg_catalog.concat('text search parser ', p.prsname)
          FROM pg_catalog.pg_ts_parser p WHERE p.prsnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_ts_template'::pg_catalog.regclass::pg_catalog.oid, t.oid, pg_catalog.concat('text search template ', t.tmplname)
          FROM pg_catalog.pg_ts_template t WHERE t.tmplnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass::pg_catalog.oid, s.oid, pg_catalog.concat('statistics object ', s.stxname)
          FROM pg_catalog.pg_statistic_ext s WHERE s.stxnamespace OPERATOR(pg_catalog.=) v_nsp
    )
    SELECT pg_catalog.string_agg(o.what, ', ') INTO v_objects
      FROM objs o
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                        WHERE d.classid OPERATOR(pg_catalog.=) o.classid AND d.objid OPERATOR(pg_catalog.=) o.objid
                          AND (d.deptype OPERATOR(pg_catalog.=) ANY (ARRAY['a', 'i']::"char"[])
                               OR (d.deptype OPERATOR(pg_catalog.=) 'e'::"char" AND d.refobjid OPERATOR(pg_catalog.=) v_ext)));
    IF v_objects IS NULL THEN
        SELECT pg_catalog.string_agg(x.what, ', ') INTO v_objects FROM (
            SELECT 'CREATE granted to another role' AS what FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
             WHERE n.oid OPERATOR(pg_catalog.=) v_nsp AND a.grantee OPERATOR(pg_catalog.<>) n.nspowner
               AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
            UNION ALL SELECT 'default privileges' FROM pg_catalog.pg_default_acl d
             WHERE d.defaclnamespace OPERATOR(pg_catalog.=) v_nsp) x;
    END IF;
    IF v_objects IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy: schema tenancy holds what the extension did not create (%)', v_objects
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The update runs as a superuser with schema tenancy on its search_path; it refuses to run next to objects somebody else put there.',
                  HINT = 'Move or drop them (or revoke the grants), then run ALTER EXTENSION tenancy UPDATE again. Nothing was changed.';
    END IF;
END
$guard$;

