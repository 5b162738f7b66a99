-- tenancy catalog. Loaded right after the install guard: everything else refers to these
-- tables. Every table is an extension configuration table, so pg_dump keeps its rows.
CREATE TABLE tenancy.roles (
    name                    text PRIMARY KEY
                            CHECK (name OPERATOR(pg_catalog.~) '^[a-z][a-z0-9_]{0,62}$'),
    rank                    integer NOT NULL UNIQUE CHECK (rank OPERATOR(pg_catalog.>) 0),
    can_read                boolean NOT NULL DEFAULT true,
    can_write               boolean NOT NULL DEFAULT false,
    can_delete              boolean NOT NULL DEFAULT false,
    can_manage_members      boolean NOT NULL DEFAULT false,
    can_manage_organization boolean NOT NULL DEFAULT false,
    is_builtin              boolean NOT NULL DEFAULT false,
    description             text
);
COMMENT ON TABLE tenancy.roles IS
  'Organization roles, highest rank first, and what each may do. A DBA may add roles or change the rights; RLS policies read this table.';

INSERT INTO tenancy.roles
    (name, rank, can_read, can_write, can_delete, can_manage_members, can_manage_organization, is_builtin, description)
VALUES
    ('owner',   50, true, true,  true,  true,  true,  true, 'Everything, including renaming and deactivating the organization'),
    ('admin',   40, true, true,  true,  true,  false, true, 'Reads, writes, deletes and manages members'),
    ('manager', 30, true, true,  true,  false, false, true, 'Reads, writes and deletes'),
    ('member',  20, true, true,  false, false, false, true, 'Reads and writes'),
    ('viewer',  10, true, false, false, false, false, true, 'Reads only');

CREATE TABLE tenancy.organizations (
    id          uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    name        text NOT NULL CHECK (pg_catalog.btrim(name) OPERATOR(pg_catalog.<>) '' AND pg_catalog.length(name) OPERATOR(pg_catalog.<=) 200),
    slug        text NOT NULL UNIQUE CHECK (slug OPERATOR(pg_catalog.~) '^[a-z0-9][a-z0-9_-]{0,62}$'),
    settings    jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(settings) OPERATOR(pg_catalog.=) 'object'),
    is_active   boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE tenancy.organizations IS 'Tenants. Tenant tables point here by id (uuid columns) or by slug (text columns).';

CREATE TABLE tenancy.memberships (
    organization_id uuid NOT NULL REFERENCES tenancy.organizations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL,
    role            text NOT NULL REFERENCES tenancy.roles (name) ON UPDATE CASCADE,
    is_default      boolean NOT NULL DEFAULT false,
    is_active       boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (organization_id, user_id)
);
-- Lookups by user (policies, get_user_organization_id) are index-only scans on this.
CREATE INDEX memberships_user_idx ON tenancy.memberships (user_id, organization_id)
    INCLUDE (role, is_active, is_default);
-- At most one default organization per user.
CREATE UNIQUE INDEX memberships_one_default_idx ON tenancy.memberships (user_id) WHERE is_default;
COMMENT ON TABLE tenancy.memberships IS 'Which user belongs to which organization, with which role.';

CREATE TABLE tenancy.invitations (
    id              uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES tenancy.organizations (id) ON DELETE CASCADE,
    email           text NOT NULL CHECK (email OPERATOR(pg_catalog.~) '^[^@[:space:]]+@[^@[:space:]]+$'),
    role            text NOT NULL REFERENCES tenancy.roles (name) ON UPDATE CASCADE,
    token_sha256    bytea NOT NULL UNIQUE,
    invited_by      uuid,
    expires_at      timestamptz NOT NULL,
    accepted_at     timestamptz,
    accepted_by     uuid,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE tenancy.invitations IS 'Invitations to join an organization. Only the SHA-256 of the token is stored; the token is shown once.';

CREATE TABLE tenancy.tenant_tables (
    relid           regclass PRIMARY KEY,
    tenant_column   name NOT NULL,
    column_type     text NOT NULL CHECK (column_type OPERATOR(pg_catalog.=) ANY (ARRAY['uuid', 'text'])),
    mode            text CHECK (mode OPERATOR(pg_catalog.=) ANY (ARRAY['membership', 'context'])),
    state           text NOT NULL DEFAULT 'registered',
    details         jsonb NOT NULL DEFAULT '{}',
    registered_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE tenancy.tenant_tables IS 'Tables under tenancy: their tenant column, its type, and the state of their conversion.';

CREATE SEQUENCE tenancy.migration_log_id_seq;
CREATE TABLE tenancy.migration_log (
    id          bigint PRIMARY KEY DEFAULT pg_catalog.nextval('tenancy.migration_log_id_seq'::pg_catalog.regclass),
    operation   text NOT NULL,
    table_name  text,
    status      text NOT NULL CHECK (status OPERATOR(pg_catalog.=) ANY (ARRAY['started', 'succeeded', 'failed', 'skipped'])),
    details     jsonb NOT NULL DEFAULT '{}',
    actor       name NOT NULL DEFAULT current_user,
    started_at  timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at timestamptz,
    -- The runbooks read a migration log as (phase, operation, status, details, created_at):
    -- phase is the backfill phase an entry records, created_at when it started.
    phase       text GENERATED ALWAYS AS (details OPERATOR(pg_catalog.->>) 'phase') STORED,
    created_at  timestamptz GENERATED ALWAYS AS (started_at) STORED
);
ALTER SEQUENCE tenancy.migration_log_id_seq OWNED BY tenancy.migration_log.id;
CREATE INDEX migration_log_table_idx ON tenancy.migration_log (table_name, started_at);
COMMENT ON TABLE tenancy.migration_log IS 'Every operation tenancy performed on user tables or on the catalog, with timings.';

-- Login before any tenant context (tenancy.login_lookup): which columns of which table a role
-- may read by a key (an email), across organizations. Written by the table's owner only.
CREATE TABLE tenancy.login_lookups (
    relid       regclass PRIMARY KEY,
    key_column  name NOT NULL,
    columns     name[] NOT NULL CHECK (pg_catalog.cardinality(columns) OPERATOR(pg_catalog.>) 0),
    grantee     regrole NOT NULL,
    created_by  name NOT NULL DEFAULT current_user,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE tenancy.login_lookups IS
  'Login before any tenant context: the columns of a table that members of grantee may read by key_column (tenancy.login_lookup), whatever row-level security hides.';

-- pg_dump keeps the rows (built-in roles are recreated by CREATE EXTENSION itself).
SELECT pg_catalog.pg_extension_config_dump('tenancy.roles', 'WHERE NOT is_builtin');
SELECT pg_catalog.pg_extension_config_dump('tenancy.organizations', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.memberships', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.invitations', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.tenant_tables', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.migration_log', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.migration_log_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.login_lookups', '');
