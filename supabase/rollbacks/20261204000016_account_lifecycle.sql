-- Undo 16. Account lifecycle (deletion and export)
drop function service.export_account(uuid, jsonb, integer);
drop function service.due_account_deletions(integer);
drop function service.complete_account_deletion(uuid);
drop function service.purge_account_answers(uuid, integer);
drop function private.auth_account(uuid);
drop function private.delete_auth_user(uuid);
drop function service.record_account_deletion_step(uuid, text, text);
drop function service.request_account_deletion(uuid, text, text);
drop function service.find_account(text);
drop function private.account_deletion_state(uuid);

create or replace function private.refuse_deleting_billed_users() returns trigger
language plpgsql
set search_path = ''
as $$
declare
  billed text;
begin
  select string_agg(s.stripe_subscription_id, ', ' order by s.stripe_subscription_id) into billed
  from public.subscriptions s
  where s.user_id = old.id and s.status in ('trialing', 'active', 'past_due', 'unpaid') and not s.cancel_at_period_end;
  if billed is not null then
    raise sqlstate 'PT409' using
      message = format('user %s still has subscription(s) %s, which Stripe keeps charging', old.id, billed),
      hint = 'Cancel it first (the billing portal, or the Stripe dashboard), then delete the user once the '
             || 'cancellation event has been received (each one, if several).';
  end if;
  return old;
end
$$;

drop trigger file_stripe_event on private.stripe_events;
drop function private.file_stripe_event();
drop trigger forget_deleted_user on public.users;
drop function private.forget_deleted_user();
drop index private.idx_stripe_events_no_customer;
drop index private.idx_stripe_events_customer;
drop function private.stripe_event_customer(jsonb);
drop table private.deleted_stripe_customers;

create or replace function public.stored_recordings() returns integer
language plpgsql stable
set search_path = ''
as $$
begin
  return (select count(*) from storage.objects o
          where o.bucket_id = 'answers' and o.name like (select auth.uid())::text || '/%');
end
$$;
alter table public.users drop column deletion_requested_at;

drop trigger refuse_work_while_deleting on public.question_ratings;
drop trigger refuse_work_while_deleting on public.responses;
drop trigger refuse_work_while_deleting on public.practice_sessions;
drop function private.refuse_work_while_deleting();
drop function private.user_hash(uuid);
drop table private.account_deletions;

create or replace function service.checkout_context(user_id uuid, plan_code text) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  plan public.plans;
  live text;
begin
  if not exists (select from public.users u where u.id = checkout_context.user_id) then
    raise sqlstate 'PT404' using message = 'no such user';
  end if;
  select * into plan from public.plans p where p.code = plan_code and p.is_active and p.price_cents > 0;
  if not found then
    raise sqlstate 'PT404' using
      message = format('no plan %L can be bought', plan_code),
      hint = (select 'Choose one of: ' || string_agg(p.code, ', ' order by p.sort_order)
              from public.plans p where p.is_active and p.price_cents > 0);
  end if;
  if plan.stripe_price_id is null then
    raise sqlstate 'PT503' using message = format('plan %s has no Stripe price configured', plan.code);
  end if;
  select s.stripe_subscription_id into live from public.subscriptions s
  where s.user_id = checkout_context.user_id and s.status in ('trialing', 'active', 'past_due', 'unpaid', 'paused');
  if live is not null then
    raise sqlstate 'PT409' using
      message = 'you already have a subscription',
      hint = 'Change or cancel it from the billing portal (POST /billing/portal).';
  end if;
  return jsonb_build_object(
    'stripe_customer_id', (select c.stripe_customer_id from public.billing_customers c
                           where c.user_id = checkout_context.user_id and c.deleted_at is null),
    -- A customer deleted in Stripe is replaced; its id keys the idempotent creation of the next one.
    'replaces_customer', (select c.stripe_customer_id from public.billing_customers c
                          where c.user_id = checkout_context.user_id and c.deleted_at is not null),
    'email', (select u.email from public.users u where u.id = checkout_context.user_id),
    'price_id', plan.stripe_price_id,
    'trial_days', case
      when exists (select from public.subscriptions s
                   where s.user_id = checkout_context.user_id and s.trial_start is not null) then 0
      else plan.trial_days end
  );
end
$$;

create or replace function private.apply_subscription_snapshot(
  snapshot jsonb, event_id text, event_type text, event_created timestamptz
) returns text
language plpgsql
set search_path = ''
as $$
declare
  sub jsonb := snapshot -> 'subscription';
  version timestamptz := coalesce((snapshot ->> 'version')::timestamptz, event_created);
  is_fresh boolean := coalesce((snapshot ->> 'fresh')::boolean, false);
  existing public.subscriptions;
  is_new boolean;
  new_plan uuid;
  owner uuid;
  new_status public.subscription_status := (sub ->> 'status')::public.subscription_status;
  change text;
begin
  -- Serialize on the Stripe id, not the row: two first events of one subscription find no row to lock.
  perform pg_advisory_xact_lock(hashtextextended('stripe_subscription:' || (sub ->> 'stripe_subscription_id'), 0));
  select * into existing from public.subscriptions
  where stripe_subscription_id = sub ->> 'stripe_subscription_id';
  is_new := not found;

  if not is_new and existing.last_event_created_at is not null then
    if existing.last_event_created_at > version then
      return 'stale';
    end if;
    if existing.last_event_created_at = version and not is_fresh
       and existing.last_event_id is distinct from event_id then
      return 'needs_refresh';
    end if;
  end if;

  new_plan := private.plan_for_price(sub ->> 'price_id', sub ->> 'price_lookup_key');
  if new_plan is null then
    perform private.raise_operator_alert('unknown_price', coalesce(sub ->> 'price_id', 'none'), jsonb_build_object(
      'price_id', sub ->> 'price_id', 'lookup_key', sub ->> 'price_lookup_key',
      'stripe_subscription_id', sub ->> 'stripe_subscription_id', 'stripe_event_id', event_id));
    return 'unmatched_price';
  end if;

  owner := coalesce(
    existing.user_id,
    (sub ->> 'user_id')::uuid,
    (snapshot ->> 'user_id')::uuid,
    (select c.user_id from public.billing_customers c where c.stripe_customer_id = sub ->> 'stripe_customer_id')
  );
  if owner is null or not exists (select from public.users u where u.id = owner) then
    perform private.raise_operator_alert('unlinked_customer', sub ->> 'stripe_customer_id', jsonb_build_object(
      'stripe_customer_id', sub ->> 'stripe_customer_id', 'stripe_subscription_id', sub ->> 'stripe_subscription_id',
      'claimed_user_id', owner, 'stripe_event_id', event_id));
    return 'unlinked';
  end if;

  insert into public.billing_customers (user_id, stripe_customer_id)
  values (owner, sub ->> 'stripe_customer_id')
  on conflict do nothing;

  if is_new then
    insert into public.subscriptions as s (
      user_id, plan_id, status, stripe_customer_id, stripe_subscription_id, stripe_price_id,
      trial_start, trial_end, current_period_start, current_period_end, cancel_at_period_end,
      canceled_at, ended_at, last_event_id, last_event_created_at, stripe_created_at
    ) values (
      owner, new_plan, new_status, sub ->> 'stripe_customer_id', sub ->> 'stripe_subscription_id',
      sub ->> 'price_id', (sub ->> 'trial_start')::timestamptz, (sub ->> 'trial_end')::timestamptz,
      (sub ->> 'current_period_start')::timestamptz, (sub ->> 'current_period_end')::timestamptz,
      coalesce((sub ->> 'cancel_at_period_end')::boolean, false), (sub ->> 'canceled_at')::timestamptz,
      (sub ->> 'ended_at')::timestamptz, event_id, version, (sub ->> 'created')::timestamptz
    )
    returning * into existing;
    insert into public.subscription_changes
      (subscription_id, user_id, stripe_event_id, stripe_event_type, old_status, new_status, old_plan_id,
       new_plan_id, occurred_at)
    values (existing.id, owner, event_id, event_type, null, new_status, null, new_plan, version);
    change := 'created';
  else
    update public.subscriptions s set
      plan_id = new_plan,
      status = new_status,
      stripe_customer_id = sub ->> 'stripe_customer_id',
      stripe_price_id = sub ->> 'price_id',
      trial_start = (sub ->> 'trial_start')::timestamptz,
      trial_end = (sub ->> 'trial_end')::timestamptz,
      current_period_start = (sub ->> 'current_period_start')::timestamptz,
      current_period_end = (sub ->> 'current_period_end')::timestamptz,
      cancel_at_period_end = coalesce((sub ->> 'cancel_at_period_end')::boolean, false),
      canceled_at = (sub ->> 'canceled_at')::timestamptz,
      ended_at = (sub ->> 'ended_at')::timestamptz,
      last_event_id = event_id,
      last_event_created_at = version,
      stripe_created_at = coalesce((sub ->> 'created')::timestamptz, s.stripe_created_at)
    where s.id = existing.id;

    change := 'unchanged';
    if existing.status is distinct from new_status or existing.plan_id is distinct from new_plan then
      insert into public.subscription_changes
        (subscription_id, user_id, stripe_event_id, stripe_event_type, old_status, new_status, old_plan_id,
         new_plan_id, occurred_at)
      values (existing.id, existing.user_id, event_id, event_type, existing.status, new_status, existing.plan_id,
              new_plan, version);
      change := 'updated';
    end if;
  end if;

  perform private.check_live_subscriptions(owner);
  -- Events of this customer that arrived before anyone knew whose it was can be applied now. (Two deliveries
  -- linking one customer at once can deadlock here; PostgreSQL aborts one, a 503, and Stripe's retry applies it.)
  perform private.apply_pending_events(sub ->> 'stripe_customer_id');
  return change;
end
$$;
