-- tenancy install guard. Loaded first (bootstrap), before anything else of the install script.
-- The shipped install scripts of earlier releases (sql/versions/tenancy--X.Y.Z.sql) start with
-- this same block: CREATE EXTENSION tenancy VERSION 'X.Y.Z' runs them as a superuser too.

----------------------------------------------------------------------------------------------
-- Install guard (PostgreSQL manual, "Security Considerations for Extension Scripts").
--
-- CREATE EXTENSION creates schema tenancy as the calling role when it does not exist, and uses
-- it as it is when it does. On a trusted install the rest of this script runs as the bootstrap
-- superuser with schema tenancy on its search_path, so anything the calling role left in that
-- schema (an operator tenancy.=(oid, regnamespace), a function tenancy.format(text, text), ...)
-- could run as a superuser. So, before anything else:
--   1. the schema is taken over by the superuser running this script: from here on nobody but
--      the extension creates objects in it (the installing role administers tenancy through the
--      catalog tables, which it owns, not through the schema);
--   2. the script refuses to go on unless the schema is new (created by this CREATE EXTENSION,
--      or left behind by a DROP EXTENSION, which leaves it to a superuser), holds no object,
--      grants nothing to anybody and has no default privileges.
-- Until the check has passed, every operator and function below is schema-qualified.
----------------------------------------------------------------------------------------------
DO $guard$
DECLARE
    v_nsp      oid;
    v_old      oid;
    v_fresh    boolean;
    v_objects  text;
BEGIN
    SELECT n.oid, n.nspowner,
           n.xmin OPERATOR(pg_catalog.=) (SELECT e.xmin FROM pg_catalog.pg_extension e
                                           WHERE e.extname OPERATOR(pg_catalog.=) 'tenancy')
      INTO v_nsp, v_old, v_fresh
      FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) 'tenancy';
    -- A schema that existed before this CREATE EXTENSION could be written to by a transaction
    -- that has not committed yet (and so is invisible to the checks below). Trust it only when a
    -- superuser owned it (as after DROP EXTENSION), or when no other transaction that has written
    -- anything is open in this database under a role that may create objects in it.
    IF NOT coalesce(v_fresh, false)
       AND NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) v_old)
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                    WHERE a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
                      AND a.backend_xid IS NOT NULL
                      AND a.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
                      AND pg_catalog.has_schema_privilege(a.usesysid, v_nsp, 'CREATE')
                      AND NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r
                                WHERE r.oid OPERATOR(pg_catalog.=) a.usesysid)) THEN
        RAISE EXCEPTION 'tenancy: schema tenancy existed before CREATE EXTENSION, and a transaction that may be writing to it is open'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Drop the schema and let CREATE EXTENSION create it, or run CREATE EXTENSION again once no other transaction of a role that may create objects in schema tenancy is open.';
    END IF;
    EXECUTE 'ALTER SCHEMA tenancy OWNER TO CURRENT_USER';
    SELECT pg_catalog.string_agg(o.what, ', ') INTO v_objects FROM (
        SELECT pg_catalog.concat('relation ', c.relname) AS what FROM pg_catalog.pg_class c
         WHERE c.relnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT pg_catalog.concat('function ', p.proname) FROM pg_catalog.pg_proc p
         WHERE p.pronamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT pg_catalog.concat('type ', t.typname) FROM pg_catalog.pg_type t
         WHERE t.typnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT pg_catalog.concat('operator ', o.oprname) FROM pg_catalog.pg_operator o
         WHERE o.oprnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT pg_catalog.concat('collation ', c.collname) FROM pg_catalog.pg_collation c
         WHERE c.collnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT pg_catalog.concat('conversion ', c.conname) FROM pg_catalog.pg_conversion c
         WHERE c.connamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT pg_catalog.concat('operator class ', c.opcname) FROM pg_catalog.pg_opclass c
         WHERE c.opcnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT pg_catalog.concat('operator family ', f.opfname) FROM pg_catalog.pg_opfamily f
         WHERE f.opfnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT pg_catalog.concat('text search configuration ', c.cfgname) FROM pg_catalog.pg_ts_config c
         WHERE c.cfgnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT pg_catalog.concat('text search dictionary ', d.dictname) FROM pg_catalog.pg_ts_dict d
         WHERE d.dictnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT pg_catalog.concat('text search parser ', p.prsname) FROM pg_catalog.pg_ts_parser p
         WHERE p.prsnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT pg_catalog.concat('text search template ', t.tmplname) FROM pg_catalog.pg_ts_template t
         WHERE t.tmplnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT pg_catalog.concat('statistics object ', s.stxname) FROM pg_catalog.pg_statistic_ext s
         WHERE s.stxnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT pg_catalog.concat('extension ', e.extname) FROM pg_catalog.pg_extension e
         WHERE e.extnamespace OPERATOR(pg_catalog.=) v_nsp AND e.extname OPERATOR(pg_catalog.<>) 'tenancy'
        UNION ALL SELECT 'a grant to another role' FROM pg_catalog.pg_namespace n,
               pg_catalog.aclexplode(n.nspacl) a
         WHERE n.oid OPERATOR(pg_catalog.=) v_nsp AND a.grantee OPERATOR(pg_catalog.<>) n.nspowner
        UNION ALL SELECT 'default privileges' FROM pg_catalog.pg_default_acl d
         WHERE d.defaclnamespace OPERATOR(pg_catalog.=) v_nsp
    ) o;
    IF v_objects IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy: schema tenancy already exists and is not empty (%)', v_objects
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'tenancy installs only into a schema that nobody else can have prepared: its install script runs as a superuser.',
                  HINT = 'Drop the schema (DROP SCHEMA tenancy CASCADE, after moving anything you need), then run CREATE EXTENSION tenancy again: it creates the schema itself.';
    END IF;
END
$guard$;
