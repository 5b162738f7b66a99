SET LOCAL tenancy.user_id = 'aaaaaaaa-0000-4000-8000-:ug';
SELECT tenancy.set_organization('bbbbbbbb-0000-4000-8000-:og');
