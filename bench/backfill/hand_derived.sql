-- The hand-written fill of the derived case (psql variable tbl): the column, then one UPDATE of
-- every row from its parent row, each in its own transaction. The second statement is timed.
\set ON_ERROR_STOP 1
ALTER TABLE public.:tbl ADD COLUMN organization_id uuid;
UPDATE public.:tbl c SET organization_id = p.organization_id FROM public.bf_parent p WHERE p.id = c.parent_id;
