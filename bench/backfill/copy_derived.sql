-- One copy of the derived case's child table (psql variable tbl): the rows of bf_dsrc (the first
-- :rows of them; rows=ALL: every one) with a primary key and the foreign key to bf_parent the
-- organization is derived through, vacuumed and analyzed.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SET maintenance_work_mem = '512MB';
DROP TABLE IF EXISTS public.:tbl;
CREATE TABLE public.:tbl (LIKE public.bf_dsrc);
INSERT INTO public.:tbl SELECT * FROM public.bf_dsrc ORDER BY id LIMIT :rows;
ALTER TABLE public.:tbl ADD PRIMARY KEY (id);
ALTER TABLE public.:tbl ADD FOREIGN KEY (parent_id) REFERENCES public.bf_parent;
VACUUM ANALYZE public.:tbl;
