-- Billing is written only by the service (the Stripe webhook's SQL): a user reads their own customer record,
-- subscription, its history and usage counters, and writes none of them; a visitor reads none of them.
begin;
select plan(16);

insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values
  ('00000000-0000-0000-0000-000000000000', 'a0000000-0000-4000-8000-00000000000a', 'authenticated', 'authenticated',
   'alice@example.test', '{"provider": "email", "providers": ["email"]}', '{}', now(), now()),
  ('00000000-0000-0000-0000-000000000000', 'b0000000-0000-4000-8000-00000000000b', 'authenticated', 'authenticated',
   'bob@example.test', '{"provider": "email", "providers": ["email"]}', '{}', now(), now());
insert into public.billing_customers (user_id, stripe_customer_id)
values ('a0000000-0000-4000-8000-00000000000a', 'cus_pgtap_alice'),
       ('b0000000-0000-4000-8000-00000000000b', 'cus_pgtap_bob');
insert into public.subscriptions (id, user_id, plan_id, status, stripe_customer_id, stripe_subscription_id)
select s.id, s.user_id, p.id, 'active', s.customer, s.subscription
from (values
  ('a4000000-0000-4000-8000-00000000000a'::uuid, 'a0000000-0000-4000-8000-00000000000a'::uuid, 'cus_pgtap_alice',
   'sub_pgtap_alice'),
  ('b4000000-0000-4000-8000-00000000000b'::uuid, 'b0000000-0000-4000-8000-00000000000b'::uuid, 'cus_pgtap_bob',
   'sub_pgtap_bob')
) as s (id, user_id, customer, subscription)
cross join public.plans p where p.code = 'monthly';
insert into public.usage_counters (user_id, metric, period_start, used)
values ('a0000000-0000-4000-8000-00000000000a', 'evaluations', current_date, 1),
       ('b0000000-0000-4000-8000-00000000000b', 'evaluations', current_date, 3);

set local role authenticated;
set local request.jwt.claims = '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated"}';

select results_eq(
  $$ select id from public.subscriptions $$,
  $$ values ('a4000000-0000-4000-8000-00000000000a'::uuid) $$,
  'a user sees only their own subscription'
);
select results_eq(
  $$ select stripe_customer_id from public.billing_customers $$,
  $$ values ('cus_pgtap_alice'::text) $$,
  'a user sees only their own billing customer'
);
select results_eq(
  $$ select used from public.usage_counters $$,
  $$ values (1) $$,
  'a user sees only their own usage counters'
);
select is_empty(
  $$ select from public.subscription_changes where user_id <> 'a0000000-0000-4000-8000-00000000000a' $$,
  'a user sees no one else''s subscription history'
);
select throws_ok(
  $$ update public.subscriptions set status = 'active', current_period_end = now() + interval '10 years'
     where id = 'a4000000-0000-4000-8000-00000000000a' $$,
  '42501', null,
  'a user cannot extend their own subscription'
);
select throws_ok(
  $$ insert into public.subscriptions (user_id, plan_id, status, stripe_customer_id, stripe_subscription_id)
     select 'a0000000-0000-4000-8000-00000000000a', id, 'active', 'cus_pgtap_alice', 'sub_forged'
     from public.plans where code = 'monthly' $$,
  '42501', null,
  'a user cannot give themselves a subscription'
);
select throws_ok(
  $$ delete from public.subscriptions where id = 'a4000000-0000-4000-8000-00000000000a' $$,
  '42501', null,
  'a user cannot delete their subscription row'
);
select throws_ok(
  $$ update public.usage_counters set used = 0 $$,
  '42501', null,
  'a user cannot reset their usage counters'
);
select throws_ok(
  $$ insert into public.usage_counters (user_id, metric, period_start, used)
     values ('a0000000-0000-4000-8000-00000000000a', 'practice_sessions', current_date, 0) $$,
  '42501', null,
  'a user cannot write usage counters'
);
select throws_ok(
  $$ update public.billing_customers set stripe_customer_id = 'cus_pgtap_bob' $$,
  '42501', null,
  'a user cannot repoint their billing customer'
);
select throws_ok(
  $$ insert into public.subscription_changes (subscription_id, user_id, stripe_event_id, new_status, occurred_at)
     values ('a4000000-0000-4000-8000-00000000000a', 'a0000000-0000-4000-8000-00000000000a', 'evt_forged', 'active',
             now()) $$,
  '42501', null,
  'a user cannot write subscription history'
);
select throws_ok(
  $$ update public.plans set price_cents = 0 $$,
  '42501', null,
  'a user cannot change plan prices'
);

-- A visitor reads no billing data at all.
set local role anon;
set local request.jwt.claims = '{"role": "anon"}';
select throws_ok($$ select from public.subscriptions $$, '42501', null, 'anon cannot read subscriptions');
select throws_ok($$ select from public.billing_customers $$, '42501', null, 'anon cannot read billing customers');
select throws_ok($$ select from public.usage_counters $$, '42501', null, 'anon cannot read usage counters');

-- The service writes billing (service_role bypasses RLS).
set local role service_role;
set local request.jwt.claims = '{"role": "service_role"}';
select results_eq(
  $$ update public.usage_counters set used = used + 1
     where user_id = 'b0000000-0000-4000-8000-00000000000b' returning used $$,
  $$ values (4) $$,
  'service_role writes usage counters'
);

select * from finish();
rollback;
