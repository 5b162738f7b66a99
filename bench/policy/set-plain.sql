SET LOCAL app.user_id = 'aaaaaaaa-0000-4000-8000-:ug';
SELECT set_config('app.organization_id', 'bbbbbbbb-0000-4000-8000-:og', true);
