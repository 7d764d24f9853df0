-- Progress and achievements are the user's own and written only by the service; platform analytics and AI
-- usage are for admins (app_metadata.role = 'admin', which only the auth server sets); catalogues are public.
begin;
select plan(12);

insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values
  ('00000000-0000-0000-0000-000000000000', 'a0000000-0000-4000-8000-00000000000a', 'authenticated', 'authenticated',
   'alice@example.test', '{"provider": "email", "providers": ["email"]}', '{}', now(), now()),
  ('00000000-0000-0000-0000-000000000000', 'b0000000-0000-4000-8000-00000000000b', 'authenticated', 'authenticated',
   'bob@example.test', '{"provider": "email", "providers": ["email"]}', '{}', now(), now());
insert into public.questions (id, content, category, difficulty, experience_level, source)
values ('c0000000-0000-4000-8000-00000000000c', 'Describe a system you designed (pgTAP).', 'behavioral', 'easy',
        'entry', 'curated');
insert into public.achievements (user_id, achievement_type)
values ('a0000000-0000-4000-8000-00000000000a', 'first_session'),
       ('b0000000-0000-4000-8000-00000000000b', 'first_session');
insert into public.user_progress (user_id, metric_name, period, period_start, metric_value)
values ('a0000000-0000-4000-8000-00000000000a', 'questions_answered', 'all_time', '2026-01-01', 3),
       ('b0000000-0000-4000-8000-00000000000b', 'questions_answered', 'all_time', '2026-01-01', 7);
insert into public.analytics_daily (metric_date, metric_name, metric_value) values ('2026-01-01', 'pgtap.users', 2);
insert into public.ai_usage (user_id, purpose, model, latency_ms, succeeded)
values ('a0000000-0000-4000-8000-00000000000a', 'evaluation', 'gpt-4o-mini', 900, true);

set local role authenticated;
set local request.jwt.claims = '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated"}';
select results_eq(
  $$ select distinct user_id from public.achievements $$,
  $$ values ('a0000000-0000-4000-8000-00000000000a'::uuid) $$,
  'a user sees only their own achievements'
);
select results_eq(
  $$ select metric_value from public.user_progress $$,
  $$ values (3::numeric) $$,
  'a user sees only their own progress'
);
select throws_ok(
  $$ insert into public.achievements (user_id, achievement_type)
     values ('a0000000-0000-4000-8000-00000000000a', 'streak_30') $$,
  '42501', null,
  'a user cannot award themselves an achievement'
);
select throws_ok(
  $$ update public.user_progress set metric_value = 1000 $$,
  '42501', null,
  'a user cannot change their progress'
);
select is_empty($$ select from public.analytics_daily $$, 'a user who is not an admin sees no platform analytics');
select is_empty($$ select from public.ai_usage $$, 'a user who is not an admin sees no AI usage, not even their own');
select isnt_empty(
  $$ select from public.questions where id = 'c0000000-0000-4000-8000-00000000000c' $$,
  'a signed-in user reads the question bank'
);

-- An admin reads the platform's figures.
set local request.jwt.claims =
  '{"sub": "b0000000-0000-4000-8000-00000000000b", "role": "authenticated", "app_metadata": {"role": "admin"}}';
select isnt_empty($$ select from public.analytics_daily $$, 'an admin reads platform analytics');
select isnt_empty($$ select from public.ai_usage $$, 'an admin reads AI usage');

-- A visitor: the catalogues only.
set local role anon;
set local request.jwt.claims = '{"role": "anon"}';
select throws_ok($$ select from public.questions $$, '42501', null, 'anon cannot read the question bank');
select throws_ok($$ select from public.achievements $$, '42501', null, 'anon cannot read achievements');
select lives_ok(
  $$ select from public.achievement_catalog, public.vocabulary limit 1 $$,
  'anon reads the achievement catalogue and the vocabulary'
);

select * from finish();
rollback;
