-- Plans are public while active (a retired one stays visible to its subscribers); a user reads and edits only
-- their own user row and profile.
begin;
select plan(13);

insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values
  ('00000000-0000-0000-0000-000000000000', 'a0000000-0000-4000-8000-00000000000a', 'authenticated', 'authenticated',
   'alice@example.test', '{"provider": "email", "providers": ["email"]}', '{}', now(), now()),
  ('00000000-0000-0000-0000-000000000000', 'b0000000-0000-4000-8000-00000000000b', 'authenticated', 'authenticated',
   'bob@example.test', '{"provider": "email", "providers": ["email"]}', '{}', now(), now());
insert into public.plans (code, name, price_cents, billing_interval, is_active, features, usage_limits)
select 'pgtap_retired', 'Retired (pgTAP)', 4900, 'month', false, features, usage_limits
from public.plans where code = 'monthly';
insert into public.subscriptions (user_id, plan_id, status, stripe_customer_id, stripe_subscription_id)
select 'b0000000-0000-4000-8000-00000000000b', id, 'active', 'cus_pgtap_bob', 'sub_pgtap_bob'
from public.plans where code = 'pgtap_retired';
insert into public.user_profiles (user_id, target_role)
values ('a0000000-0000-4000-8000-00000000000a', 'data engineer'),
       ('b0000000-0000-4000-8000-00000000000b', 'product manager');

-- A visitor.
set local role anon;
set local request.jwt.claims = '{"role": "anon"}';
select ok(
  (select count(*) > 0 from public.plans),
  'anon sees the plans on sale'
);
select is_empty($$ select from public.plans where not is_active $$, 'anon sees only active plans');
select throws_ok($$ select from public.users $$, '42501', null, 'anon cannot read users');
select throws_ok($$ select from public.user_profiles $$, '42501', null, 'anon cannot read profiles');

-- Alice: active plans only; her own user row and profile.
set local role authenticated;
set local request.jwt.claims = '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated"}';
select is_empty(
  $$ select from public.plans where code = 'pgtap_retired' $$,
  'a retired plan is hidden from users not subscribed to it'
);
select results_eq(
  $$ select email::text from public.users $$,
  $$ values ('alice@example.test') $$,
  'a user sees only their own user row'
);
select results_eq(
  $$ select target_role from public.user_profiles $$,
  $$ values ('data engineer'::text) $$,
  'a user sees only their own profile'
);
select is_empty(
  $$ update public.user_profiles set target_role = 'hacker'
     where user_id = 'b0000000-0000-4000-8000-00000000000b' returning user_id $$,
  'a user cannot edit another user''s profile'
);
select throws_ok(
  $$ insert into public.user_profiles (user_id, target_role)
     values ('b0000000-0000-4000-8000-00000000000b', 'data engineer') $$,
  '42501', null,
  'a user cannot create a profile for someone else'
);
select throws_ok(
  $$ update public.users set email = 'bob@example.test' $$,
  '42501', null,
  'a user cannot change their email (only the auth server does)'
);
select throws_ok(
  $$ delete from public.users $$,
  '42501', null,
  'a user cannot delete user rows through the API'
);

-- Bob keeps seeing the retired plan he pays for.
set local request.jwt.claims = '{"sub": "b0000000-0000-4000-8000-00000000000b", "role": "authenticated"}';
select isnt_empty(
  $$ select from public.plans where code = 'pgtap_retired' $$,
  'a subscriber still sees their retired plan'
);
select results_eq(
  $$ select target_role from public.user_profiles $$,
  $$ values ('product manager'::text) $$,
  'the other user''s profile is unchanged'
);

select * from finish();
rollback;
