SET LOCAL tenancy.user_id = 'aaaaaaaa-0000-4000-8000-:ug';
