-- Seed 004 (CAPS point of sale, "Task 23: Data Migration for Multi-Tenancy"): the 32 tables of a
-- single-tenant auto-parts POS (users and sessions, customers and their vehicles, work orders,
-- layaways, loyalty, store credit, gift cards, promotions, offline sync, products with fitment
-- data and inventory, backups) get a text tenant_id whose value for every existing row is the
-- slug 'caps-automotive'. The runbook's migration script, its success criteria and its
-- isolation tests, done with tenancy, online. Run it with psql (it uses \gexec):
--
--   psql -v ON_ERROR_STOP=1 -f examples/seed_004_caps_pos.sql     (in an empty database)
--
-- connected as a superuser (scripts/test.sh runs it). Who runs what:
--   * the superuser, at the top only: the cluster roles (the POS's caps_pos_app, and the LOGIN
--     role caps_owner, NOSUPERUSER NOBYPASSRLS, member of caps_pos_app) and ALTER DATABASE ...
--     OWNER TO caps_owner; then SET SESSION AUTHORIZATION caps_owner;
--   * the database owner caps_owner, everything else: the single-tenant schema and data, CREATE
--     EXTENSION tenancy (a trusted install), the conversion, the success criteria and validation
--     (over isolated tables in a transaction that called tenancy.operate('runbook 004
--     validation'): operator mode, no superuser, no BYPASSRLS), the POS's requests (SET LOCAL ROLE
--     caps_pos_app) and the rollback;
--   * a concurrent writer (a second connection of caps_owner, examples/writer_start.psql) keeps
--     inserting and updating audit_log and pending_operations during the whole backfill;
--   * the superuser again for one statement only: DROP SCHEMA tenancy after DROP EXTENSION (the
--     empty schema belongs to the bootstrap superuser, docs/security.md; the owner cannot drop it).
-- Part 1 builds the single-tenant schema with data (what exists before Task 23); part 2 is the
-- conversion (phase 2); part 3 is the runbook's success criteria and validation (phase 3), each
-- an assertion; part 4 the rollback.
\set ON_ERROR_STOP 1
\pset pager off
SET client_min_messages = warning;

-- As the superuser: the POS's database role (not a superuser: RLS applies to it) and the database
-- owner, an ordinary login role (roles are cluster-wide: created only when absent).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'caps_pos_app') THEN
        CREATE ROLE caps_pos_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'caps_owner') THEN
        CREATE ROLE caps_owner LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB;
    END IF;
END $$;
GRANT caps_pos_app TO caps_owner;   -- to run the POS's requests (SET LOCAL ROLE caps_pos_app)
SELECT format('ALTER DATABASE %I OWNER TO caps_owner', current_database()) \gexec
-- From here on, the database owner (the superuser comes back only for DROP SCHEMA tenancy).
SET SESSION AUTHORIZATION caps_owner;
DO $$
BEGIN   -- what the rest runs as: the owner of the database, neither superuser nor BYPASSRLS
    IF (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)
       OR (SELECT datdba::regrole::text FROM pg_database WHERE datname = current_database()) <> current_user THEN
        RAISE EXCEPTION 'not running as the database owner %, an ordinary role', current_user;
    END IF;
END $$;

------------------------------------------------------------------------------------------------
-- Part 1. The POS before Task 23: 32 tables, no notion of tenant.
------------------------------------------------------------------------------------------------
-- Core (3)
CREATE TABLE users (
    id text PRIMARY KEY DEFAULT gen_random_uuid()::text, username text NOT NULL UNIQUE, email text,
    display_name text NOT NULL, role text NOT NULL, store_id text NOT NULL DEFAULT 'store-1', password_hash text NOT NULL,
    is_active boolean NOT NULL DEFAULT true, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE sessions (
    id text PRIMARY KEY DEFAULT gen_random_uuid()::text, user_id text NOT NULL REFERENCES users ON DELETE CASCADE,
    ip_address inet, created_at timestamptz NOT NULL DEFAULT now(), expires_at timestamptz NOT NULL);
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY, user_id text REFERENCES users ON DELETE SET NULL, entity_type text NOT NULL, entity_id text NOT NULL,
    action text NOT NULL, old_values jsonb, new_values jsonb, created_at timestamptz NOT NULL DEFAULT now());
-- Products (5)
CREATE TABLE product_categories (
    id serial PRIMARY KEY, name text NOT NULL UNIQUE, parent_id int REFERENCES product_categories ON DELETE SET NULL,
    sort_order int NOT NULL DEFAULT 0);
CREATE TABLE products (
    id serial PRIMARY KEY, sku text NOT NULL, name text NOT NULL, category_id int REFERENCES product_categories,
    brand text, price numeric(12, 2) NOT NULL, cost numeric(12, 2), barcode text, is_active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT products_sku_key UNIQUE (sku));
CREATE UNIQUE INDEX products_barcode_idx ON products (barcode);
CREATE TABLE fitment_data (
    id serial PRIMARY KEY, product_id int NOT NULL REFERENCES products ON DELETE CASCADE, make text NOT NULL, model text NOT NULL,
    year_from int NOT NULL, year_to int NOT NULL, engine text);
CREATE INDEX fitment_data_make_model_idx ON fitment_data (make, model, year_from);
CREATE TABLE inventory (
    id serial PRIMARY KEY, product_id int NOT NULL REFERENCES products ON DELETE CASCADE, store_id text NOT NULL,
    quantity_on_hand int NOT NULL DEFAULT 0, reorder_point int NOT NULL DEFAULT 0, bin_location text,
    UNIQUE (product_id, store_id));
CREATE TABLE inventory_transactions (
    id bigserial PRIMARY KEY, product_id int NOT NULL REFERENCES products, store_id text NOT NULL, quantity int NOT NULL,
    kind text NOT NULL, reference text, user_id text REFERENCES users, created_at timestamptz NOT NULL DEFAULT now());
-- Sales & customers (17)
CREATE TABLE price_levels (
    id serial PRIMARY KEY, name text NOT NULL UNIQUE, discount_percent numeric(5, 2) NOT NULL DEFAULT 0);
CREATE TABLE customers (
    id serial PRIMARY KEY, customer_number text NOT NULL UNIQUE, first_name text NOT NULL, last_name text NOT NULL,
    email text, phone text, price_level_id int REFERENCES price_levels, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE customer_vehicles (
    id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers ON DELETE CASCADE, vin text UNIQUE,
    year int, make text, model text, engine text, mileage int);
CREATE TABLE layaways (
    id serial PRIMARY KEY, layaway_number text NOT NULL UNIQUE, customer_id int NOT NULL REFERENCES customers,
    total numeric(12, 2) NOT NULL, balance numeric(12, 2) NOT NULL, status text NOT NULL DEFAULT 'active', due_date date);
CREATE TABLE layaway_payments (
    id serial PRIMARY KEY, layaway_id int NOT NULL REFERENCES layaways ON DELETE CASCADE, amount numeric(12, 2) NOT NULL,
    method text NOT NULL, paid_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE work_orders (
    id serial PRIMARY KEY, work_order_number text NOT NULL UNIQUE, customer_id int REFERENCES customers,
    vehicle_id int REFERENCES customer_vehicles, technician_id text REFERENCES users, status text NOT NULL DEFAULT 'open',
    opened_at timestamptz NOT NULL DEFAULT now(), closed_at timestamptz, total numeric(12, 2));
CREATE TABLE work_order_lines (
    id serial PRIMARY KEY, work_order_id int NOT NULL REFERENCES work_orders ON DELETE CASCADE, product_id int REFERENCES products,
    description text NOT NULL, quantity numeric(10, 2) NOT NULL, unit_price numeric(12, 2) NOT NULL, is_labor boolean NOT NULL DEFAULT false);
CREATE TABLE commission_rules (
    id serial PRIMARY KEY, name text NOT NULL, category_id int REFERENCES product_categories, percent numeric(5, 2) NOT NULL,
    min_margin numeric(5, 2));
CREATE TABLE commissions (
    id serial PRIMARY KEY, user_id text NOT NULL REFERENCES users, work_order_id int REFERENCES work_orders,
    rule_id int REFERENCES commission_rules, amount numeric(12, 2) NOT NULL, earned_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE loyalty_accounts (
    id serial PRIMARY KEY, customer_id int NOT NULL UNIQUE REFERENCES customers, points_balance int NOT NULL DEFAULT 0,
    tier text NOT NULL DEFAULT 'bronze');
CREATE TABLE loyalty_transactions (
    id bigserial PRIMARY KEY, account_id int NOT NULL REFERENCES loyalty_accounts, points int NOT NULL, reason text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE credit_accounts (
    id serial PRIMARY KEY, customer_id int NOT NULL UNIQUE REFERENCES customers, credit_limit numeric(12, 2) NOT NULL,
    balance numeric(12, 2) NOT NULL DEFAULT 0, status text NOT NULL DEFAULT 'open');
CREATE TABLE credit_transactions (
    id bigserial PRIMARY KEY, account_id int NOT NULL REFERENCES credit_accounts, amount numeric(12, 2) NOT NULL,
    kind text NOT NULL, reference text, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE gift_cards (
    id serial PRIMARY KEY, card_number text NOT NULL UNIQUE, initial_balance numeric(12, 2) NOT NULL, balance numeric(12, 2) NOT NULL,
    customer_id int REFERENCES customers, issued_at timestamptz NOT NULL DEFAULT now(), expires_at date);
CREATE TABLE gift_card_transactions (
    id bigserial PRIMARY KEY, gift_card_id int NOT NULL REFERENCES gift_cards, amount numeric(12, 2) NOT NULL, kind text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE promotions (
    id serial PRIMARY KEY, code text NOT NULL UNIQUE, name text NOT NULL, discount_type text NOT NULL,
    discount_value numeric(12, 2) NOT NULL, starts_at timestamptz, ends_at timestamptz, is_active boolean NOT NULL DEFAULT true);
CREATE TABLE promotion_usage (
    id bigserial PRIMARY KEY, promotion_id int NOT NULL REFERENCES promotions, customer_id int REFERENCES customers,
    work_order_id int REFERENCES work_orders, discount_amount numeric(12, 2) NOT NULL, used_at timestamptz NOT NULL DEFAULT now());
-- Sync (3)
CREATE TABLE sync_log (
    id bigserial PRIMARY KEY, store_id text NOT NULL, direction text NOT NULL, entity_type text NOT NULL, entity_id text NOT NULL,
    operation text NOT NULL, status text NOT NULL, synced_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE sync_conflicts (
    id bigserial PRIMARY KEY, sync_log_id bigint REFERENCES sync_log, entity_type text NOT NULL, entity_id text NOT NULL,
    local_version jsonb, remote_version jsonb, resolution text, resolved_by text REFERENCES users,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE pending_operations (
    id bigserial PRIMARY KEY, entity_type text NOT NULL, entity_id text NOT NULL, operation text NOT NULL, payload jsonb NOT NULL,
    attempts int NOT NULL DEFAULT 0, created_at timestamptz NOT NULL DEFAULT now());
-- Backups (4)
CREATE TABLE backup_destinations (
    id serial PRIMARY KEY, name text NOT NULL UNIQUE, kind text NOT NULL, config jsonb NOT NULL DEFAULT '{}',
    is_enabled boolean NOT NULL DEFAULT true);
CREATE TABLE backup_settings (
    id serial PRIMARY KEY, key text NOT NULL UNIQUE, value text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE backups (
    id serial PRIMARY KEY, destination_id int REFERENCES backup_destinations, kind text NOT NULL, status text NOT NULL,
    parent_backup_id int REFERENCES backups, file_path text, size_bytes bigint, checksum text,
    started_at timestamptz NOT NULL DEFAULT now(), completed_at timestamptz);
CREATE TABLE restore_jobs (
    id serial PRIMARY KEY, backup_id int NOT NULL REFERENCES backups, status text NOT NULL, requested_by text REFERENCES users,
    rows_restored bigint, started_at timestamptz NOT NULL DEFAULT now(), completed_at timestamptz);

-- The data: CAPS Automotive, two stores.
INSERT INTO users (id, username, email, display_name, role, store_id, password_hash)
SELECT 'c0000000-0000-0000-0000-' || lpad(g::text, 12, '0'), 'user' || g, 'user' || g || '@capsautomotive.com', 'User ' || g,
       (ARRAY['admin', 'manager', 'cashier', 'technician', 'parts_specialist', 'readonly'])[1 + (g - 1) % 6],
       'store-' || (1 + g % 2), md5('pw' || g)
  FROM generate_series(1, 80) g;
INSERT INTO sessions (user_id, ip_address, created_at, expires_at)
SELECT 'c0000000-0000-0000-0000-' || lpad((1 + g % 80)::text, 12, '0'), ('10.0.' || (g % 250) || '.' || (1 + g % 200))::inet,
       timestamptz '2025-03-01' + g * interval '5 minutes', timestamptz '2025-03-01' + g * interval '5 minutes' + interval '8 hours'
  FROM generate_series(1, 3000) g;
INSERT INTO audit_log (user_id, entity_type, entity_id, action, new_values, created_at)
SELECT 'c0000000-0000-0000-0000-' || lpad((1 + g % 80)::text, 12, '0'), (ARRAY['product', 'customer', 'work_order'])[1 + g % 3],
       (1 + g % 5000)::text, (ARRAY['create', 'update', 'delete'])[1 + g % 3], jsonb_build_object('n', g),
       timestamptz '2025-01-01' + g * interval '1 minute'
  FROM generate_series(1, 40000) g;
INSERT INTO product_categories (name, parent_id, sort_order)
SELECT 'Category ' || g, CASE WHEN g <= 10 THEN NULL ELSE 1 + g % 10 END, g FROM generate_series(1, 60) g;
INSERT INTO products (sku, name, category_id, brand, price, cost, barcode)
SELECT 'SKU-' || lpad(g::text, 6, '0'), 'Part ' || g, 1 + g % 60, (ARRAY['Bosch', 'ACDelco', 'Moog', 'Denso', 'Gates'])[1 + g % 5],
       round(5 + (g % 500) * 1.1, 2), round(3 + (g % 500) * 0.7, 2), CASE WHEN g % 10 = 0 THEN NULL ELSE '0' || (400000000000 + g) END
  FROM generate_series(1, 12000) g;
INSERT INTO fitment_data (product_id, make, model, year_from, year_to, engine)
SELECT 1 + g % 12000, (ARRAY['Ford', 'Chevrolet', 'Toyota', 'Honda', 'Dodge'])[1 + g % 5], 'Model ' || (g % 40),
       1995 + g % 25, 1995 + g % 25 + g % 6, (ARRAY['2.0L', '3.5L V6', '5.7L V8'])[1 + g % 3]
  FROM generate_series(1, 24000) g;
INSERT INTO inventory (product_id, store_id, quantity_on_hand, reorder_point, bin_location)
SELECT p, s, (p * 7) % 40, 5, 'A' || (p % 30) FROM generate_series(1, 12000) p CROSS JOIN (VALUES ('store-1'), ('store-2')) v(s);
INSERT INTO inventory_transactions (product_id, store_id, quantity, kind, reference, user_id, created_at)
SELECT 1 + g % 12000, 'store-' || (1 + g % 2), CASE WHEN g % 3 = 0 THEN -(1 + g % 4) ELSE 1 + g % 12 END,
       (ARRAY['sale', 'receipt', 'adjustment'])[1 + g % 3], 'REF-' || g,
       'c0000000-0000-0000-0000-' || lpad((1 + g % 80)::text, 12, '0'), timestamptz '2025-01-01' + g * interval '2 minutes'
  FROM generate_series(1, 60000) g;
INSERT INTO price_levels (name, discount_percent)
VALUES ('Retail', 0), ('Fleet', 10), ('Wholesale', 20), ('Shop', 15), ('Employee', 25);
INSERT INTO customers (customer_number, first_name, last_name, email, phone, price_level_id)
SELECT 'C-' || lpad(g::text, 6, '0'), 'First' || g, 'Last' || g, 'customer' || g || '@example.com', '555-' || lpad((g % 10000)::text, 4, '0'),
       1 + g % 5
  FROM generate_series(1, 8000) g;
INSERT INTO customer_vehicles (customer_id, vin, year, make, model, engine, mileage)
SELECT 1 + g % 8000, CASE WHEN g % 20 = 0 THEN NULL ELSE '1FT' || lpad(g::text, 14, '0') END, 1995 + g % 30,
       (ARRAY['Ford', 'Chevrolet', 'Toyota', 'Honda', 'Dodge'])[1 + g % 5], 'Model ' || (g % 40), '3.5L V6', 10000 + g * 7
  FROM generate_series(1, 10000) g;
INSERT INTO layaways (layaway_number, customer_id, total, balance, status, due_date)
SELECT 'LAY-' || lpad(g::text, 5, '0'), 1 + g % 8000, 100 + g % 900, (100 + g % 900) / 2, (ARRAY['active', 'completed', 'cancelled'])[1 + g % 3],
       date '2025-06-01' + g % 180
  FROM generate_series(1, 2000) g;
INSERT INTO layaway_payments (layaway_id, amount, method, paid_at)
SELECT 1 + g % 2000, 10 + g % 90, (ARRAY['cash', 'card'])[1 + g % 2], timestamptz '2025-02-01' + g * interval '1 hour'
  FROM generate_series(1, 6000) g;
INSERT INTO work_orders (work_order_number, customer_id, vehicle_id, technician_id, status, opened_at, closed_at, total)
SELECT 'WO-' || lpad(g::text, 6, '0'), 1 + (1 + g % 10000) % 8000, 1 + g % 10000,
       'c0000000-0000-0000-0000-' || lpad((4 + 6 * (g % 13))::text, 12, '0'), (ARRAY['open', 'in_progress', 'closed'])[1 + g % 3],
       timestamptz '2025-01-01' + g * interval '30 minutes', CASE WHEN g % 3 = 2 THEN timestamptz '2025-01-02' + g * interval '30 minutes' END,
       round(50 + (g % 700) * 1.3, 2)
  FROM generate_series(1, 15000) g;
INSERT INTO work_order_lines (work_order_id, product_id, description, quantity, unit_price, is_labor)
SELECT 1 + g % 15000, CASE WHEN g % 4 = 0 THEN NULL ELSE 1 + g % 12000 END, CASE WHEN g % 4 = 0 THEN 'Labor' ELSE 'Part' END,
       1 + g % 4, round(10 + (g % 300) * 0.9, 2), g % 4 = 0
  FROM generate_series(1, 40000) g;
INSERT INTO commission_rules (name, category_id, percent, min_margin)
SELECT 'Rule ' || g, CASE WHEN g % 5 = 0 THEN NULL ELSE 1 + g % 60 END, 2 + g % 8, 10 FROM generate_series(1, 20) g;
INSERT INTO commissions (user_id, work_order_id, rule_id, amount, earned_at)
SELECT 'c0000000-0000-0000-0000-' || lpad((4 + 6 * (g % 13))::text, 12, '0'), 1 + g % 15000, 1 + g % 20, round(1 + (g % 200) * 0.25, 2),
       timestamptz '2025-01-01' + g * interval '30 minutes'
  FROM generate_series(1, 15000) g;
INSERT INTO loyalty_accounts (customer_id, points_balance, tier)
SELECT g, g % 5000, (ARRAY['bronze', 'silver', 'gold'])[1 + g % 3] FROM generate_series(1, 5000) g;
INSERT INTO loyalty_transactions (account_id, points, reason, created_at)
SELECT 1 + g % 5000, CASE WHEN g % 5 = 0 THEN -(g % 100) ELSE g % 50 END, (ARRAY['purchase', 'redemption', 'bonus'])[1 + g % 3],
       timestamptz '2025-01-01' + g * interval '10 minutes'
  FROM generate_series(1, 30000) g;
INSERT INTO credit_accounts (customer_id, credit_limit, balance, status)
SELECT g * 5, 500 + (g % 10) * 250, g % 400, (ARRAY['open', 'on_hold'])[1 + (g % 9 = 0)::int] FROM generate_series(1, 1500) g;
INSERT INTO credit_transactions (account_id, amount, kind, reference)
SELECT 1 + g % 1500, 5 + g % 200, (ARRAY['charge', 'payment'])[1 + g % 2], 'INV-' || g FROM generate_series(1, 6000) g;
INSERT INTO gift_cards (card_number, initial_balance, balance, customer_id, expires_at)
SELECT '6035' || lpad(g::text, 12, '0'), 25 * (1 + g % 8), 25 * (1 + g % 8) - g % 25, CASE WHEN g % 3 = 0 THEN NULL ELSE 1 + g % 8000 END,
       date '2027-01-01' + g % 365
  FROM generate_series(1, 3000) g;
INSERT INTO gift_card_transactions (gift_card_id, amount, kind)
SELECT 1 + g % 3000, 1 + g % 25, (ARRAY['redeem', 'reload'])[1 + g % 2] FROM generate_series(1, 9000) g;
INSERT INTO promotions (code, name, discount_type, discount_value, starts_at, ends_at)
SELECT 'PROMO' || g, 'Promotion ' || g, (ARRAY['percent', 'amount'])[1 + g % 2], 5 + g % 20,
       timestamptz '2025-01-01' + g * interval '7 days', timestamptz '2025-01-15' + g * interval '7 days'
  FROM generate_series(1, 50) g;
INSERT INTO promotion_usage (promotion_id, customer_id, work_order_id, discount_amount)
SELECT 1 + g % 50, 1 + g % 8000, CASE WHEN g % 2 = 0 THEN 1 + g % 15000 END, 1 + g % 40 FROM generate_series(1, 8000) g;
INSERT INTO sync_log (store_id, direction, entity_type, entity_id, operation, status, synced_at)
SELECT 'store-' || (1 + g % 2), (ARRAY['push', 'pull'])[1 + g % 2], (ARRAY['product', 'customer', 'work_order', 'inventory'])[1 + g % 4],
       (1 + g % 12000)::text, (ARRAY['insert', 'update', 'delete'])[1 + g % 3], CASE WHEN g % 60 = 0 THEN 'conflict' ELSE 'ok' END,
       timestamptz '2025-01-01' + g * interval '1 minute'
  FROM generate_series(1, 30000) g;
INSERT INTO sync_conflicts (sync_log_id, entity_type, entity_id, local_version, remote_version, resolution, resolved_by)
SELECT 60 * g, 'product', (1 + (60 * g) % 12000)::text, jsonb_build_object('v', g), jsonb_build_object('v', g + 1),
       CASE WHEN g % 2 = 0 THEN 'remote_wins' END, CASE WHEN g % 2 = 0 THEN 'c0000000-0000-0000-0000-000000000001' END
  FROM generate_series(1, 500) g;
INSERT INTO pending_operations (entity_type, entity_id, operation, payload, attempts)
SELECT 'inventory', (1 + g % 12000)::text, 'update', jsonb_build_object('qty', g % 40), g % 3 FROM generate_series(1, 2000) g;
INSERT INTO backup_destinations (name, kind, config)
VALUES ('Local disk', 'local', '{"path": "/var/backups/caps"}'), ('S3 offsite', 's3', '{"bucket": "caps-backups"}'),
       ('Google Drive', 'gdrive', '{"folder": "CAPS"}');
INSERT INTO backup_settings (key, value)
VALUES ('schedule', '0 2 * * *'), ('retention_days', '30'), ('incremental', 'true'), ('compress', 'zstd'), ('encrypt', 'true'),
       ('verify_after_backup', 'true'), ('max_parallel', '2'), ('notify_email', 'it@capsautomotive.com'),
       ('full_every_days', '7'), ('last_verified', '2025-06-01');
INSERT INTO backups (destination_id, kind, status, parent_backup_id, file_path, size_bytes, checksum, started_at, completed_at)
SELECT 1 + g % 3, CASE WHEN g % 7 = 1 THEN 'full' ELSE 'incremental' END, 'completed', CASE WHEN g % 7 = 1 THEN NULL ELSE g - 1 END,
       '/backups/' || g || '.tar.zst', 1000000 + g * 1000, md5(g::text), timestamptz '2025-01-01' + g * interval '1 day',
       timestamptz '2025-01-01' + g * interval '1 day' + interval '3 minutes'
  FROM generate_series(1, 400) g;
INSERT INTO restore_jobs (backup_id, status, requested_by, rows_restored)
SELECT 30 * g, 'completed', 'c0000000-0000-0000-0000-000000000001', 100000 + g FROM generate_series(1, 12) g;
SELECT format('ANALYZE %s', string_agg(quote_ident(relname), ', ')) FROM pg_class
 WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' \gexec

-- What must survive the conversion unchanged: every row of every table, as it is now (its
-- columns of today, in order), hashed; compared again at the end. The runbook's "audit: document
-- current schema and row counts".
CREATE TEMP TABLE tables_of_task_23 (t text PRIMARY KEY);
INSERT INTO tables_of_task_23
SELECT unnest('{users,sessions,audit_log,
                customers,customer_vehicles,layaways,layaway_payments,work_orders,work_order_lines,commissions,commission_rules,
                loyalty_accounts,loyalty_transactions,price_levels,credit_accounts,credit_transactions,gift_cards,
                gift_card_transactions,promotions,promotion_usage,
                sync_log,sync_conflicts,pending_operations,
                products,product_categories,fitment_data,inventory,inventory_transactions,
                backups,backup_destinations,backup_settings,restore_jobs}'::text[]);
CREATE FUNCTION pg_temp.fingerprint(t regclass, cols text[], OUT n bigint, OUT sum bigint) LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE format('SELECT count(*), sum(hashtext(row(%s)::text)) FROM %s',
                   (SELECT string_agg(quote_ident(c), ', ') FROM unnest(cols) c), t) INTO n, sum;
END $f$;
CREATE TEMP TABLE checksums AS
SELECT t, cols, (pg_temp.fingerprint(t::regclass, cols)).*
  FROM tables_of_task_23
 CROSS JOIN LATERAL (SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
                      WHERE attrelid = t::regclass AND attnum > 0 AND NOT attisdropped) c(cols);
SELECT count(*) AS tables, sum(n) AS rows FROM checksums;
SELECT array_agg(t ORDER BY t) AS tables FROM tables_of_task_23 \gset

-- Their catalog shape too (columns, constraints with names and definitions, indexes, triggers,
-- policies, RLS flags), for the rollback of part 4.
\ir rollback_check.psql

------------------------------------------------------------------------------------------------
-- Part 2. The conversion (phase 2, "Migrate").
------------------------------------------------------------------------------------------------
-- The runbook postpones a tenants table (its question 5, "later, Task 29"): tenancy's catalog is
-- it, today. CAPS Automotive is an organization whose slug is the runbook's tenant_id value.
CREATE EXTENSION tenancy;
SELECT tenancy.create_organization('CAPS Automotive', 'caps-automotive', id => '00000000-0000-0000-0000-00000000ca05',
         settings => '{"white_label": false, "stores": ["store-1", "store-2"]}');

-- tenant_id on all 32 tables, 'caps-automotive' in every existing row. column_type => 'text':
-- the column stores the organization's slug, and tenancy.organizations (slug) is what it
-- references. Deliberate differences from the runbook's script:
--  * the runbook's "ADD COLUMN tenant_id VARCHAR(255) NOT NULL DEFAULT 'caps-automotive'" in one
--    transaction: tenancy adds a text column (the foreign key to the slug bounds it to 63
--    characters), fills it in batches with a COMMIT each while the POS keeps writing, and proves NOT
--    NULL with a validated CHECK; an interrupted run is resumed, or undone with tenancy.rollback,
--    instead of restoring the backup;
--  * the runbook says "no foreign key on tenant_id, keep it simple" (its question 4): tenancy adds
--    one to organizations (slug), validated, ON UPDATE CASCADE, so no row names an unknown tenant;
--  * the permanent DEFAULT 'caps-automotive' would put every other tenant's rows into CAPS when
--    the application forgets the tenant: it lasts only until enable_isolation below, which makes
--    the default the tenant of the transaction (tenancy.current_organization_slug());
--  * the runbook's 32 single-column indexes (tenant_id): tenancy builds composite ones leading
--    with tenant_id instead (tenant + primary key, tenant + each foreign key, tenant + each unique
--    key), which serve the same lookups, and rewrites every unique key to be per tenant (the
--    runbook's question 3, "composite indexes: yes").
-- The POS keeps writing meanwhile: a concurrent writer (a second connection of the owner) inserts
-- audit_log rows and pending operations, each marked as the writer's, and updates the ones it
-- wrote before, one COMMIT each, until the backfill is over (writer_stop.psql). The checklist
-- finds every one of them in caps-automotive, then deletes them (by their marker) before
-- comparing the rows with part 1's.
CREATE SCHEMA seed_writer;
CREATE TABLE seed_writer.control (stop boolean NOT NULL DEFAULT false, written int NOT NULL DEFAULT 0, finished_at timestamptz);
INSERT INTO seed_writer.control DEFAULT VALUES;
CREATE PROCEDURE seed_writer.run() LANGUAGE plpgsql AS $w$
DECLARE
    v_i int := 0;
    v_log bigint;
    v_op bigint;
BEGIN
    WHILE NOT (SELECT stop FROM seed_writer.control) LOOP
        v_i := v_i + 1;
        UPDATE public.audit_log SET action = 'update' WHERE id = v_log;
        UPDATE public.pending_operations SET attempts = 1 WHERE id = v_op;
        INSERT INTO public.audit_log (user_id, entity_type, entity_id, action)
        VALUES ('c0000000-0000-0000-0000-' || lpad((1 + v_i % 80)::text, 12, '0'), 'seed-writer', v_i::text, 'create')
        RETURNING id INTO v_log;
        INSERT INTO public.pending_operations (entity_type, entity_id, operation, payload)
        VALUES ('seed-writer', v_i::text, 'update', jsonb_build_object('qty', v_i)) RETURNING id INTO v_op;
        UPDATE seed_writer.control SET written = v_i;
        COMMIT;
        PERFORM pg_sleep(0.02);
    END LOOP;
    UPDATE seed_writer.control SET finished_at = clock_timestamp();
END $w$;
\ir writer_start.psql
CALL tenancy.backfill_all(:'tables',
    organization_id => '00000000-0000-0000-0000-00000000ca05',
    tenant_column => 'tenant_id', column_type => 'text',
    batch_size => 20000);
SELECT table_name, phase, rows_done FROM tenancy.backfill_progress ORDER BY table_name;

-- The composite indexes, built CONCURRENTLY (no write blocked), then the last step: unique
-- keys and foreign keys rewritten to carry tenant_id.
SELECT statement FROM tenancy.pending_statements() \gexec
CALL tenancy.backfill_all(:'tables',
    organization_id => '00000000-0000-0000-0000-00000000ca05',
    tenant_column => 'tenant_id', column_type => 'text');
SELECT table_name, phase, skipped FROM tenancy.backfill_progress ORDER BY table_name;
-- The backfill is over: the writer stops (its rows are checked in part 3).
\ir writer_stop.psql

-- Phase 4's "middleware injects tenant_id from context" needs to know which users belong to
-- CAPS: every user of the POS becomes a member, the POS roles mapped to tenancy's.
SELECT * FROM tenancy.adopt_users('users',
    '{"admin": "owner", "manager": "manager", "cashier": "member", "technician": "member",
      "parts_specialist": "member", "readonly": "viewer"}',
    organization_id => '00000000-0000-0000-0000-00000000ca05');

-- Phase 4's "queries add tenant_id filtering", done once in the database: RLS on all 32 tables,
-- keyed on the slug, so a query the application forgets to filter still sees one tenant.
SELECT table_name, action FROM tenancy.enable_isolation_all('public', tenant_column => 'tenant_id') ORDER BY 1;

-- The POS's database role (created at the top, by the superuser).
GRANT USAGE ON SCHEMA public TO caps_pos_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO caps_pos_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO caps_pos_app;

------------------------------------------------------------------------------------------------
-- Part 3. The runbook's success criteria and phase 3 validation, each an assertion, run by the
-- database owner.
------------------------------------------------------------------------------------------------
-- Row-level security is forced: without operator mode the owner sees no row of an isolated table,
-- so the answers below come from the explicit operator path, not from a privilege.
DO $$
DECLARE v_n bigint;
BEGIN
    SELECT count(*) INTO v_n FROM products;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: the owner sees % products without operator mode', v_n; END IF;
    SELECT count(*) INTO v_n FROM audit_log;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: the owner sees % audit_log rows without operator mode', v_n; END IF;
END $$;

-- The validation queries: a tenancy administrator acting as itself, in operator mode (one
-- transaction, logged with its reason).
BEGIN;
SELECT tenancy.operate('runbook 004 validation');
DO $$
DECLARE
    v_tables text[] := ARRAY(SELECT t FROM tables_of_task_23 ORDER BY t);
    v_t text;
    v_n bigint;
    v_m bigint;
    v_bad text;
BEGIN
    -- Every row the concurrent writer wrote during the backfill is there, updated as it was (all
    -- but its last), in caps-automotive; then they go (by their marker), so that what is left is
    -- part 1's rows exactly.
    SELECT written INTO v_n FROM seed_writer.control;
    IF v_n < 3 THEN RAISE EXCEPTION 'checklist: the concurrent writer wrote only % rows', v_n; END IF;
    IF (SELECT count(*) FROM audit_log WHERE entity_type = 'seed-writer' AND tenant_id = 'caps-automotive'
           AND action = CASE WHEN entity_id = v_n::text THEN 'create' ELSE 'update' END) <> v_n
       OR (SELECT count(*) FROM audit_log WHERE entity_type = 'seed-writer') <> v_n THEN
        RAISE EXCEPTION 'checklist: the writer wrote % audit_log rows, found %', v_n, (SELECT count(*) FROM audit_log WHERE entity_type = 'seed-writer');
    END IF;
    IF (SELECT count(*) FROM pending_operations WHERE entity_type = 'seed-writer' AND tenant_id = 'caps-automotive'
           AND attempts = CASE WHEN entity_id = v_n::text THEN 0 ELSE 1 END) <> v_n
       OR (SELECT count(*) FROM pending_operations WHERE entity_type = 'seed-writer') <> v_n THEN
        RAISE EXCEPTION 'checklist: the writer wrote % pending operations, found %', v_n, (SELECT count(*) FROM pending_operations WHERE entity_type = 'seed-writer');
    END IF;
    RAISE WARNING 'checklist: the % audit_log rows and % pending operations of the concurrent writer are there, in caps-automotive', v_n, v_n;
    DELETE FROM audit_log WHERE entity_type = 'seed-writer';
    DELETE FROM pending_operations WHERE entity_type = 'seed-writer';

    IF cardinality(v_tables) <> 32 THEN RAISE EXCEPTION 'checklist: % tables in scope, not 32', cardinality(v_tables); END IF;
    -- All 30+ tables have a tenant_id column, text, NOT NULL.
    SELECT string_agg(t, ', ') INTO v_bad FROM unnest(v_tables) t
     WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = t::regclass AND a.attname = 'tenant_id' AND a.attnotnull
                          AND NOT a.attisdropped AND a.atttypid IN ('text'::regtype, 'character varying'::regtype));
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: no NOT NULL text tenant_id on %', v_bad; END IF;
    -- All existing data has tenant_id = 'caps-automotive'; no NULL tenant_id values.
    FOREACH v_t IN ARRAY v_tables LOOP
        EXECUTE format('SELECT count(*), count(*) FILTER (WHERE tenant_id IS NOT DISTINCT FROM %L) FROM %I', 'caps-automotive', v_t)
           INTO v_n, v_m;
        IF v_n = 0 OR v_n <> v_m THEN
            RAISE EXCEPTION 'checklist: %: % rows, % with tenant_id = caps-automotive', v_t, v_n, v_m;
        END IF;
    END LOOP;
    -- The CAPS tenant exists, and every tenant_id references it (validated foreign key to the slug).
    IF NOT EXISTS (SELECT 1 FROM tenancy.organizations WHERE slug = 'caps-automotive' AND is_active) THEN
        RAISE EXCEPTION 'checklist: the caps-automotive tenant is missing';
    END IF;
    SELECT string_agg(t, ', ') INTO v_bad FROM unnest(v_tables) t
     WHERE NOT EXISTS (SELECT 1 FROM pg_constraint c
                        WHERE c.conrelid = t::regclass AND c.contype = 'f' AND c.confrelid = 'tenancy.organizations'::regclass
                          AND c.convalidated AND pg_get_constraintdef(c.oid) LIKE 'FOREIGN KEY (tenant_id) REFERENCES tenancy.organizations(slug)%');
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: no validated foreign key to organizations (slug) on %', v_bad; END IF;
    -- All 30+ indexes created: every table has a valid, non-partial index leading with tenant_id.
    SELECT string_agg(t, ', ') INTO v_bad FROM unnest(v_tables) t
     WHERE NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                        WHERE i.indrelid = t::regclass AND a.attname = 'tenant_id' AND i.indisvalid AND i.indpred IS NULL);
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: no index leading with tenant_id on %', v_bad; END IF;
    SELECT count(*) INTO v_n FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
     WHERE i.indrelid::regclass::text = ANY (v_tables) AND a.attname = 'tenant_id' AND i.indisvalid AND i.indnatts > 1;
    IF v_n < 32 THEN RAISE EXCEPTION 'checklist: % composite indexes, fewer than 32', v_n; END IF;
    RAISE WARNING 'checklist: % composite indexes lead with tenant_id', v_n;
    IF EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid::regclass::text = ANY (v_tables) AND NOT i.indisvalid) THEN
        RAISE EXCEPTION 'checklist: an invalid index is left';
    END IF;
    -- Composite keys: no unique index without tenant_id is left (primary keys aside), so one
    -- tenant's SKU, customer number or gift card number never blocks another's.
    SELECT string_agg(i.indexrelid::regclass::text, ', ') INTO v_bad FROM pg_index i
     WHERE i.indrelid::regclass::text = ANY (v_tables) AND i.indisunique AND NOT i.indisprimary
       AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attname = 'tenant_id' AND a.attnum = ANY (i.indkey::int2[]));
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: unique indexes without tenant_id: %', v_bad; END IF;
    -- No data loss: row counts match, and every row is unchanged apart from the new column.
    SELECT string_agg(c.t, ', ') INTO v_bad FROM checksums c
     WHERE NOT EXISTS (SELECT 1 FROM pg_temp.fingerprint(c.t::regclass, c.cols) f WHERE f.n = c.n AND f.sum = c.sum);
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: rows lost or changed in %', v_bad; END IF;
    -- Integrity: no NULL, no unknown tenant, no row pointing at another tenant's row, RLS on.
    SELECT string_agg(table_name, ', ') INTO v_bad FROM tenancy.validate_client_data_integrity() WHERE NOT ok OR NOT saw_every_row;
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: integrity fails on %', v_bad; END IF;
    SELECT count(*) INTO v_n FROM tenancy.validate_client_data_integrity() WHERE tenant_column = 'tenant_id';
    IF v_n <> 32 THEN RAISE EXCEPTION 'checklist: % tenant tables registered, not 32', v_n; END IF;
    -- Every user of the POS is a member of CAPS.
    SELECT count(*) INTO v_n FROM users u WHERE NOT tenancy.validate_client_access(u.id::uuid, '00000000-0000-0000-0000-00000000ca05');
    IF v_n > 0 THEN RAISE EXCEPTION 'checklist: % users cannot access caps-automotive', v_n; END IF;
    -- Every tenant table lints clean.
    SELECT string_agg(code || ' ' || object, '; ') INTO v_bad FROM tenancy.lint() WHERE split_part(object, ' ', 1) = ANY (
        SELECT 'public.' || t FROM unnest(v_tables) t);
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: lint findings: %', v_bad; END IF;
END $$;
COMMIT;
DROP SCHEMA seed_writer CASCADE;

CREATE FUNCTION pg_temp.explain(q text) RETURNS SETOF text LANGUAGE plpgsql AS $f$
BEGIN
    RETURN QUERY EXECUTE 'EXPLAIN (COSTS OFF) ' || q;
END $f$;

-- "CAPS configuration works perfectly": a CAPS user, through the POS role and RLS, sees every
-- row of all 32 tables, and a lookup by a (now per-tenant) unique key is still an index scan
-- (the runbook's "performance within 10% of baseline": timings are not asserted here, the plan is).
DO $$
DECLARE
    v_tables text[] := ARRAY(SELECT t FROM tables_of_task_23 ORDER BY t);
    v_counts bigint[] := ARRAY(SELECT c.n FROM tables_of_task_23 t JOIN checksums c USING (t) ORDER BY t);
    v_n bigint;
    v_plan text;
BEGIN
    SET LOCAL ROLE caps_pos_app;
    PERFORM set_config('tenancy.user_id', 'c0000000-0000-0000-0000-000000000001', true);
    IF tenancy.current_organization_slug() IS DISTINCT FROM 'caps-automotive' THEN
        RAISE EXCEPTION 'checklist: a CAPS user acts for %, not caps-automotive', tenancy.current_organization_slug();
    END IF;
    FOR i IN 1 .. cardinality(v_tables) LOOP
        EXECUTE format('SELECT count(*) FROM %I', v_tables[i]) INTO v_n;
        IF v_n <> v_counts[i] THEN
            RAISE EXCEPTION 'checklist: a CAPS user sees % rows of %, not %', v_n, v_tables[i], v_counts[i];
        END IF;
    END LOOP;
    SELECT string_agg(p, E'\n') INTO v_plan FROM (SELECT * FROM pg_temp.explain('SELECT * FROM products WHERE sku = ''SKU-004242''')) e(p);
    -- The InitPlan's value prints as $0 up to PostgreSQL 15, as (InitPlan 1).col1 from 17 on.
    -- Context mode (the default): an equality with the organization's slug.
    IF v_plan NOT LIKE '%Index Cond: ((%tenant_id%= %) AND (sku = %' OR v_plan LIKE '%Seq Scan%' THEN
        RAISE EXCEPTION 'checklist: a lookup by sku is not an index scan on (tenant_id, sku): %', v_plan;
    END IF;
    EXECUTE 'SELECT count(*) FROM products WHERE sku = ''SKU-004242''' INTO v_n;
    IF v_n <> 1 THEN RAISE EXCEPTION 'checklist: a CAPS user finds % products SKU-004242', v_n; END IF;
    RESET ROLE;
END $$;

-- "No cross-tenant data leakage" / "Safe tenant switching and testing": a second (white-label
-- test) tenant, whose owner is not a CAPS user.
SELECT tenancy.create_organization('Demo Parts (white-label test)', 'demo-parts', id => '00000000-0000-0000-0000-00000000de70',
         owner_user_id => 'd0000000-0000-0000-0000-000000000001');

DO $$
DECLARE
    v_tables text[] := ARRAY(SELECT t FROM tables_of_task_23 ORDER BY t);
    v_n bigint;
    v_cat int;
    v_prod int;
    v_cust int;
    v_wo int;
    v_ok boolean;
BEGIN
    SET LOCAL ROLE caps_pos_app;
    PERFORM set_config('tenancy.user_id', 'd0000000-0000-0000-0000-000000000001', true);
    PERFORM tenancy.set_organization('00000000-0000-0000-0000-00000000de70');
    -- Nothing of CAPS in any of the 32 tables.
    FOR i IN 1 .. cardinality(v_tables) LOOP
        EXECUTE format('SELECT count(*) FROM %I', v_tables[i]) INTO v_n;
        IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: the demo tenant sees % rows of % (CAPS''s)', v_n, v_tables[i]; END IF;
    END LOOP;
    -- Its own data, with CAPS's key values; tenant_id comes from the transaction's tenant.
    INSERT INTO users (id, username, display_name, role, password_hash)
    VALUES ('d0000000-0000-0000-0000-000000000001', 'user1', 'Demo owner', 'admin', md5('demo'));
    INSERT INTO product_categories (name) VALUES ('Category 1') RETURNING id INTO v_cat;
    INSERT INTO products (sku, name, category_id, price, barcode) VALUES ('SKU-004242', 'Demo part', v_cat, 9.99, '0400000004242')
        RETURNING id INTO v_prod;
    INSERT INTO inventory (product_id, store_id, quantity_on_hand) VALUES (v_prod, 'store-1', 3);
    INSERT INTO customers (customer_number, first_name, last_name) VALUES ('C-000001', 'Demo', 'Customer') RETURNING id INTO v_cust;
    INSERT INTO work_orders (work_order_number, customer_id, technician_id) VALUES ('WO-000001', v_cust, 'd0000000-0000-0000-0000-000000000001')
        RETURNING id INTO v_wo;
    INSERT INTO work_order_lines (work_order_id, product_id, description, quantity, unit_price) VALUES (v_wo, v_prod, 'Part', 1, 9.99);
    INSERT INTO gift_cards (card_number, initial_balance, balance) VALUES ('6035000000000001', 50, 50);
    INSERT INTO promotions (code, name, discount_type, discount_value) VALUES ('PROMO1', 'Demo promo', 'percent', 10);
    INSERT INTO backup_settings (key, value) VALUES ('schedule', '0 3 * * *');
    SELECT count(*) INTO v_n FROM products WHERE tenant_id = 'demo-parts';
    IF v_n <> 1 THEN RAISE EXCEPTION 'checklist: the demo tenant''s product got tenant_id other than demo-parts'; END IF;
    -- No write into CAPS: a row with CAPS's tenant_id is refused, CAPS's rows are out of reach.
    v_ok := false;
    BEGIN
        INSERT INTO products (tenant_id, sku, name, price) VALUES ('caps-automotive', 'SKU-SNEAK', 'x', 1);
    EXCEPTION WHEN insufficient_privilege THEN v_ok := true;
    END;
    IF NOT v_ok THEN RAISE EXCEPTION 'checklist: the demo tenant wrote a CAPS product'; END IF;
    UPDATE products SET price = 0 WHERE sku = 'SKU-000001';
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: the demo tenant updated % CAPS products', v_n; END IF;
    DELETE FROM backup_settings WHERE key = 'retention_days';
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: the demo tenant deleted % CAPS backup settings', v_n; END IF;
    -- Moving its own row into CAPS is refused too.
    v_ok := false;
    BEGIN
        UPDATE promotions SET tenant_id = 'caps-automotive' WHERE code = 'PROMO1';
    EXCEPTION WHEN insufficient_privilege THEN v_ok := true;
    END;
    IF NOT v_ok THEN RAISE EXCEPTION 'checklist: the demo tenant moved a promotion into CAPS'; END IF;
    -- A row cannot point at a CAPS row (CAPS's customer 2) through a foreign key.
    v_ok := false;
    BEGIN
        INSERT INTO work_orders (work_order_number, customer_id) VALUES ('WO-SNEAK', 2);
    EXCEPTION WHEN foreign_key_violation THEN v_ok := true;
    END;
    IF NOT v_ok THEN RAISE EXCEPTION 'checklist: a demo work order points at a CAPS customer'; END IF;
    -- Within the tenant, keys stay unique.
    v_ok := false;
    BEGIN
        INSERT INTO products (sku, name, price) VALUES ('SKU-004242', 'twice', 1);
    EXCEPTION WHEN unique_violation THEN v_ok := true;
    END;
    IF NOT v_ok THEN RAISE EXCEPTION 'checklist: a duplicate sku within one tenant was accepted'; END IF;
    RESET ROLE;
END $$;

-- Switching back: the CAPS user sees none of the demo tenant's rows; as the DBA (the owner, in
-- operator mode: a transaction of its own, as a user is set in this one), both tenants hold the
-- same key values, CAPS's rows are as they were, and the integrity report is clean.
DO $$
DECLARE
    v_n bigint;
BEGIN
    SET LOCAL ROLE caps_pos_app;
    PERFORM set_config('tenancy.user_id', 'c0000000-0000-0000-0000-000000000001', true);
    SELECT (SELECT count(*) FROM products WHERE sku = 'SKU-004242') + (SELECT count(*) FROM customers WHERE customer_number = 'C-000001')
         + (SELECT count(*) FROM users WHERE username = 'user1') + (SELECT count(*) FROM backup_settings WHERE key = 'schedule')
      INTO v_n;
    IF v_n <> 4 THEN RAISE EXCEPTION 'checklist: a CAPS user sees % rows for 4 keys (the demo tenant''s leak in)', v_n; END IF;
    SELECT count(*) INTO v_n FROM products WHERE tenant_id <> 'caps-automotive';
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: a CAPS user sees % products of another tenant', v_n; END IF;
    RESET ROLE;
END $$;
BEGIN;
SELECT tenancy.operate('runbook 004 validation, two tenants');
DO $$
DECLARE
    v_n bigint;
    v_bad text;
BEGIN
    SELECT count(*) INTO v_n FROM (
        SELECT tenant_id FROM products WHERE sku = 'SKU-004242' UNION ALL SELECT tenant_id FROM customers WHERE customer_number = 'C-000001'
        UNION ALL SELECT tenant_id FROM users WHERE username = 'user1' UNION ALL SELECT tenant_id FROM gift_cards WHERE card_number = '6035000000000001'
        UNION ALL SELECT tenant_id FROM promotions WHERE code = 'PROMO1' UNION ALL SELECT tenant_id FROM backup_settings WHERE key = 'schedule'
        UNION ALL SELECT tenant_id FROM work_orders WHERE work_order_number = 'WO-000001'
        UNION ALL SELECT tenant_id FROM product_categories WHERE name = 'Category 1') s
     WHERE tenant_id IN ('caps-automotive', 'demo-parts');
    IF v_n <> 16 THEN RAISE EXCEPTION 'checklist: % rows share 8 key values, not 16 (8 per tenant)', v_n; END IF;
    IF EXISTS (SELECT 1 FROM products WHERE sku = 'SKU-SNEAK' OR (tenant_id = 'caps-automotive' AND price = 0))
       OR NOT EXISTS (SELECT 1 FROM backup_settings WHERE tenant_id = 'caps-automotive' AND key = 'retention_days')
       OR NOT EXISTS (SELECT 1 FROM promotions WHERE tenant_id = 'demo-parts' AND code = 'PROMO1') THEN
        RAISE EXCEPTION 'checklist: a cross-tenant write got through';
    END IF;
    SELECT string_agg(table_name, ', ') INTO v_bad FROM tenancy.validate_client_data_integrity() WHERE NOT ok OR NOT saw_every_row;
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: integrity fails on % after the isolation test', v_bad; END IF;
    RAISE WARNING 'checklist: every item passed';
END $$;
COMMIT;

------------------------------------------------------------------------------------------------
-- Part 4. The runbook's rollback ("simple restore from backup if anything fails"; phase 5's
-- "rollback test: verify backup restore"), without the backup: on the converted, isolated
-- database, one call (tenancy.rollback_all: isolation removed, unique and foreign keys back under
-- their names, tenant_id dropped, children before parents, all or nothing), then the extension.
-- The result is what the restore would give: every table's shape and every row of before.
------------------------------------------------------------------------------------------------
BEGIN;
-- The white-label test tenant of part 3 is not in the backup: its rows go first, deleted by the
-- owner in operator mode (row-level security is forced on the owner). Children before parents:
-- each table is tried again, in passes, until a pass deletes without a foreign key violation (the
-- superuser's session_replication_role = replica, which switched the foreign keys off for this
-- before, is not the owner's to set).
SELECT tenancy.operate('runbook 004 rollback: remove the white-label test tenant');
DO $$
DECLARE
    v_t text;
    v_left text[];
BEGIN
    FOR v_pass IN 1 .. 10 LOOP
        v_left := '{}';
        FOR v_t IN SELECT t FROM tables_of_task_23 ORDER BY t LOOP
            BEGIN
                EXECUTE format('DELETE FROM %I WHERE tenant_id = %L', v_t, 'demo-parts');
            EXCEPTION WHEN foreign_key_violation THEN v_left := v_left || v_t;
            END;
        END LOOP;
        IF cardinality(v_left) = 0 THEN RETURN; END IF;
    END LOOP;
    RAISE EXCEPTION 'rollback: the demo tenant''s rows of % could not be deleted', v_left;
END $$;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM caps_pos_app;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM caps_pos_app;
REVOKE USAGE ON SCHEMA public FROM caps_pos_app;
SELECT action, count(*) AS tables FROM tenancy.rollback_all('public', drop_column => true) GROUP BY 1;
DROP EXTENSION tenancy;
-- The empty schema belongs to the bootstrap superuser (docs/security.md): only a superuser can
-- drop it, so this one statement runs as one.
RESET SESSION AUTHORIZATION;
DROP SCHEMA tenancy;      -- empty now (RESTRICT)
SET SESSION AUTHORIZATION caps_owner;
COMMIT;
SELECT pg_temp.assert_original('restore');
DO $$ BEGIN RAISE WARNING 'rollback: every level passed'; END $$;
