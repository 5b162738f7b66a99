SELECT count(tenancy.get_user_organization_id(u)) FROM public.bench_calls;
