-- The SQL functions the Lambdas call live in schema service: only service_role may use the schema or execute
-- them; the API roles get "permission denied" before any of them runs.
begin;
select plan(8);

select ok(
  not has_schema_privilege('anon', 'service', 'usage') and not has_schema_privilege('authenticated', 'service', 'usage'),
  'anon and authenticated have no usage on schema service'
);
select ok(has_schema_privilege('service_role', 'service', 'usage'), 'service_role uses schema service');
select is_empty(
  $$ select p.oid::regprocedure from pg_catalog.pg_proc p
     where p.pronamespace = 'service'::regnamespace
       and (has_function_privilege('anon', p.oid, 'execute') or has_function_privilege('authenticated', p.oid, 'execute')) $$,
  'no service function is executable by anon or authenticated'
);
select is_empty(
  $$ select p.oid::regprocedure from pg_catalog.pg_proc p
     where p.pronamespace = 'private'::regnamespace and p.prosecdef
       and (has_function_privilege('anon', p.oid, 'execute') or has_function_privilege('authenticated', p.oid, 'execute')) $$,
  'no security definer helper in private is executable by anon or authenticated'
);

set local role authenticated;
set local request.jwt.claims = '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated"}';
select throws_ok(
  $$ select service.apply_stripe_event('{"id": "evt_forged", "type": "customer.subscription.created"}'::jsonb) $$,
  '42501', null,
  'a user cannot apply a Stripe event'
);
select throws_ok(
  $$ select service.record_ai_usage('{}'::jsonb) $$,
  '42501', null,
  'a user cannot record AI usage'
);

set local role anon;
set local request.jwt.claims = '{"role": "anon"}';
select throws_ok(
  $$ select service.apply_stripe_event('{"id": "evt_forged", "type": "customer.subscription.created"}'::jsonb) $$,
  '42501', null,
  'anon cannot apply a Stripe event'
);
select throws_ok(
  $$ select public.start_session('quick') $$,
  '42501', null,
  'anon cannot start a practice session'
);

select * from finish();
rollback;
