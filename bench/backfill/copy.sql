-- One copy of the single-tenant table (psql variable tbl): same rows, same physical order, a
-- primary key, vacuumed and analyzed.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SET maintenance_work_mem = '512MB';
DROP TABLE IF EXISTS public.:tbl;
CREATE TABLE public.:tbl (LIKE public.bf_src);
INSERT INTO public.:tbl SELECT * FROM public.bf_src;
ALTER TABLE public.:tbl ADD PRIMARY KEY (id);
VACUUM ANALYZE public.:tbl;
