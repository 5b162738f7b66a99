-- The benchmark's data set. psql variables: n_orgs, n_users, n_rows.
-- Ids are built from numbers so that pgbench scripts can name them without a lookup:
--   organization i (1..n_orgs): bbbbbbbb-0000-4000-8000-<100000000000 + i>
--   user j (1..n_users):        aaaaaaaa-0000-4000-8000-<100000000000 + j>
-- (twelve decimal digits are twelve valid hex digits).
-- User j is a member of organization ((j - 1) % n_orgs) + 1, by default; so organization o has the
-- users o + n_orgs * k, k = 0 .. n_users / n_orgs - 1: k = 0 is its owner (who is also an admin
-- of the next organization), odd k are members, even k viewers.
-- Tenant sizes follow Zipf's law (s = 1): organization o has about n_rows / (H * o) rows (H the
-- harmonic number of n_orgs), the remainder going to organization 1: a few large tenants, many
-- small ones. Row (o, s) of organization o, s = 1 .. n(o), has id s * 10000 + o.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SET work_mem = '512MB';
SET maintenance_work_mem = '512MB';

CREATE FUNCTION public.bench_org(i integer) RETURNS uuid LANGUAGE sql IMMUTABLE
  RETURN ('bbbbbbbb-0000-4000-8000-' || (100000000000 + i)::text)::uuid;
CREATE FUNCTION public.bench_user(j integer) RETURNS uuid LANGUAGE sql IMMUTABLE
  RETURN ('aaaaaaaa-0000-4000-8000-' || (100000000000 + j)::text)::uuid;

-- Organizations and memberships, bulk-inserted by the catalog owner.
INSERT INTO tenancy.organizations (id, name, slug)
SELECT bench_org(i), 'Organization ' || i, 'org-' || i FROM generate_series(1, :n_orgs) i;

INSERT INTO tenancy.memberships (organization_id, user_id, role, is_default)
SELECT bench_org(((j - 1) % :n_orgs) + 1), bench_user(j),
       CASE WHEN (j - 1) / :n_orgs = 0 THEN 'owner' WHEN ((j - 1) / :n_orgs) % 2 = 1 THEN 'member' ELSE 'viewer' END,
       true
  FROM generate_series(1, :n_users) j;
INSERT INTO tenancy.memberships (organization_id, user_id, role, is_default)
SELECT bench_org((o % :n_orgs) + 1), bench_user(o), 'admin', false
  FROM generate_series(1, :n_orgs) o;

-- Tenant sizes.
CREATE TABLE public.bench_sizes AS
WITH h AS (SELECT sum(1.0::float8 / o) AS h FROM generate_series(1, :n_orgs) o),
     n AS (SELECT o, greatest(1, floor(:n_rows::float8 / (h.h * o)))::integer AS n FROM h, generate_series(1, :n_orgs) o)
SELECT o, n + CASE WHEN o = 1 THEN :n_rows - (SELECT sum(n) FROM n)::integer ELSE 0 END AS n FROM n;
ALTER TABLE public.bench_sizes ADD PRIMARY KEY (o);

-- The tenant table: rows of every tenant spread over one year, inserted in time order, so the
-- rows of a tenant are scattered over the heap as in a real table.
CREATE TABLE public.t_a (
    id              bigint NOT NULL,
    organization_id uuid NOT NULL,
    created_at      timestamptz NOT NULL,
    status          text NOT NULL,
    amount_cents    bigint NOT NULL,
    note            text
);
INSERT INTO public.t_a
SELECT s * 10000 + z.o,
       bench_org(z.o),
       timestamptz '2024-01-01 00:00:00+00' + ((s - 1) + random()) / z.n * interval '365 days',
       (ARRAY['open', 'paid', 'shipped', 'cancelled', 'refunded'])[1 + (s * 7 + z.o) % 5],
       (s * 7919 + z.o * 104729) % 100000,
       md5((s * 10000 + z.o)::text)
  FROM public.bench_sizes z, generate_series(1::bigint, z.n) s
 ORDER BY 3;

-- What the pgbench scripts need to name a row without a lookup (see bench/policy/vars.pgbench).
CREATE TABLE public.bench_meta AS
SELECT :n_rows::bigint AS n_rows, (SELECT count(*) FROM public.t_a) AS actual_rows,
       (SELECT sum(1.0::float8 / o) FROM generate_series(1, :n_orgs) o) AS h;

-- For the function-cost comparison (part 4): users whose default organization is deactivated
-- (they get their earliest active one), and inactive memberships.
INSERT INTO tenancy.organizations (id, name, slug, is_active)
VALUES (bench_org(0), 'Deactivated organization', 'org-deactivated', false);
INSERT INTO tenancy.memberships (organization_id, user_id, role, is_default, is_active)
SELECT bench_org(0), bench_user(:n_users + j), 'member', true, true FROM generate_series(1, 20) j
UNION ALL
SELECT bench_org(j), bench_user(:n_users + j), 'member', false, j % 4 <> 0 FROM generate_series(1, 20) j
UNION ALL
SELECT bench_org(j + 1), bench_user(:n_users + j), 'viewer', false, true FROM generate_series(1, 20) j WHERE j % 2 = 0;
