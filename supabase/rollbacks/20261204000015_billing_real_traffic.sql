-- Undo 15. Billing under real Stripe traffic
-- Recreating subscriptions_one_live_per_user fails while a user has two live subscriptions: cancel one first.
drop function service.resolve_operator_alert(bigint, text);
drop function service.operator_alerts(boolean, integer);
drop function service.apply_pending_stripe_events();
create or replace function service.apply_stripe_event(event jsonb, snapshot jsonb default null) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  event_id text := event ->> 'id';
  event_type text := event ->> 'type';
  event_created timestamptz := (event ->> 'created')::timestamptz;
  change text := 'none';
  result text;
begin
  if event_id is null or event_type is null or event_created is null then
    raise sqlstate 'PT400' using message = 'event needs id, type and created';
  end if;

  -- Claim the event id first: a concurrent delivery of the same event waits here, then sees it as done.
  insert into private.stripe_events (id, type, stripe_created_at, livemode, outcome, payload)
  values (event_id, event_type, event_created, coalesce((event ->> 'livemode')::boolean, false), 'applied',
          coalesce(event -> 'payload', '{}'))
  on conflict (id) do nothing;
  if not found then
    return jsonb_build_object('outcome', 'duplicate', 'change', change);
  end if;

  if snapshot is null then
    result := 'ignored';
  elsif snapshot ? 'deleted_customer' then
    change := private.apply_customer_deletion(snapshot ->> 'deleted_customer', event_id, event_type, event_created);
    result := 'applied';
  elsif snapshot ? 'subscription' then
    change := private.apply_subscription_snapshot(snapshot, event_id, event_type, event_created);
    if change = 'needs_refresh' then
      -- Forget the claim so the retry with a fresh snapshot is not taken for a duplicate.
      delete from private.stripe_events where id = event_id;
      return jsonb_build_object('outcome', 'needs_refresh', 'change', change);
    end if;
    result := case when change = 'stale' then 'stale' else 'applied' end;
  else
    result := 'applied';  -- handled, nothing to change (e.g. a trial ending soon)
  end if;

  update private.stripe_events set outcome = result where id = event_id;
  return jsonb_build_object('outcome', result, 'change', change);
end
$$;
create or replace function private.apply_customer_deletion(
  customer_id text, event_id text, event_type text, event_created timestamptz
) returns text
language plpgsql
set search_path = ''
as $$
declare
  ended record;
  changed integer := 0;
begin
  update public.billing_customers set deleted_at = event_created
  where stripe_customer_id = customer_id and deleted_at is null;

  for ended in
    update public.subscriptions s set
      status = 'canceled', ended_at = coalesce(s.ended_at, event_created), last_event_id = event_id,
      last_event_created_at = event_created
    from (select id, status from public.subscriptions
          where stripe_customer_id = customer_id
            and status not in ('canceled', 'incomplete_expired')
            and (last_event_created_at is null or last_event_created_at <= event_created)
          for update) previous
    where s.id = previous.id
    returning s.id, s.user_id, s.plan_id, previous.status as old_status
  loop
    insert into public.subscription_changes
      (subscription_id, user_id, stripe_event_id, stripe_event_type, old_status, new_status, old_plan_id,
       new_plan_id, occurred_at)
    values (ended.id, ended.user_id, event_id, event_type, ended.old_status, 'canceled', ended.plan_id,
            ended.plan_id, event_created);
    changed := changed + 1;
  end loop;
  return case when changed > 0 then 'updated' else 'unchanged' end;
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
    raise sqlstate 'PT422' using
      message = format('Stripe price %s (lookup key %s) matches no plan', sub ->> 'price_id',
                       coalesce(sub ->> 'price_lookup_key', 'none')),
      hint = 'Set plans.stripe_price_id for this price (docs/operations.md), then let Stripe retry the event.';
  end if;

  owner := coalesce(
    existing.user_id,
    (sub ->> 'user_id')::uuid,
    (snapshot ->> 'user_id')::uuid,
    (select c.user_id from public.billing_customers c where c.stripe_customer_id = sub ->> 'stripe_customer_id')
  );
  if owner is null or not exists (select from public.users u where u.id = owner) then
    raise sqlstate 'PT422' using
      message = format('subscription %s belongs to no known user', sub ->> 'stripe_subscription_id'),
      hint = 'Subscriptions are created through POST /billing/checkout, which tags them with the user id.';
  end if;

  insert into public.billing_customers (user_id, stripe_customer_id)
  values (owner, sub ->> 'stripe_customer_id')
  on conflict do nothing;

  if is_new then
    insert into public.subscriptions as s (
      user_id, plan_id, status, stripe_customer_id, stripe_subscription_id, stripe_price_id,
      trial_start, trial_end, current_period_start, current_period_end, cancel_at_period_end,
      canceled_at, ended_at, last_event_id, last_event_created_at
    ) values (
      owner, new_plan, new_status, sub ->> 'stripe_customer_id', sub ->> 'stripe_subscription_id',
      sub ->> 'price_id', (sub ->> 'trial_start')::timestamptz, (sub ->> 'trial_end')::timestamptz,
      (sub ->> 'current_period_start')::timestamptz, (sub ->> 'current_period_end')::timestamptz,
      coalesce((sub ->> 'cancel_at_period_end')::boolean, false), (sub ->> 'canceled_at')::timestamptz,
      (sub ->> 'ended_at')::timestamptz, event_id, version
    )
    returning * into existing;
    insert into public.subscription_changes
      (subscription_id, user_id, stripe_event_id, stripe_event_type, old_status, new_status, old_plan_id,
       new_plan_id, occurred_at)
    values (existing.id, owner, event_id, event_type, null, new_status, null, new_plan, version);
    return 'created';
  end if;

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
    last_event_created_at = version
  where s.id = existing.id;

  if existing.status is distinct from new_status or existing.plan_id is distinct from new_plan then
    insert into public.subscription_changes
      (subscription_id, user_id, stripe_event_id, stripe_event_type, old_status, new_status, old_plan_id,
       new_plan_id, occurred_at)
    values (existing.id, existing.user_id, event_id, event_type, existing.status, new_status, existing.plan_id,
            new_plan, version);
    return 'updated';
  end if;
  return 'unchanged';
end
$$;
drop function private.apply_pending_events(text);
create or replace function private.refuse_deleting_billed_users() returns trigger
language plpgsql
set search_path = ''
as $$
declare
  billed text;
begin
  select s.stripe_subscription_id into billed from public.subscriptions s
  where s.user_id = old.id and s.status in ('trialing', 'active', 'past_due', 'unpaid') and not s.cancel_at_period_end;
  if found then
    raise sqlstate 'PT409' using
      message = format('user %s still has subscription %s, which Stripe keeps charging', old.id, billed),
      hint = 'Cancel it first (the billing portal, or the Stripe dashboard), then delete the user once the '
             || 'cancellation event has been received.';
  end if;
  return old;
end
$$;
create or replace function public.entitlements(p_user_id uuid default auth.uid(), p_at timestamptz default now())
returns table (
  plan_code text,
  plan_name text,
  subscription_status public.subscription_status,
  is_paid boolean,
  features jsonb,
  usage_limits jsonb,
  current_period_end timestamptz
)
language sql stable
set search_path = ''
as $$
  with paid as (
    select p.code, p.name, s.status, p.features, p.usage_limits, s.current_period_end
    from public.subscriptions s
    join public.plans p on p.id = s.plan_id
    where s.user_id = p_user_id
      and (
        s.status in ('trialing', 'active')
        or (s.status = 'past_due'
            and p_at < coalesce(s.current_period_start, s.updated_at) + make_interval(days => p.past_due_grace_days))
      )
    order by s.current_period_end desc nulls last
    limit 1
  )
  select code, name, status, true, features, usage_limits, current_period_end from paid
  union all
  select p.code, p.name, null, false, p.features, p.usage_limits, null
  from public.plans p
  where p.code = 'free' and not exists (select from paid)
$$;
drop function private.check_live_subscriptions(uuid);
drop function private.resolve_operator_alert(text, text, text);
drop function private.raise_operator_alert(text, text, jsonb);
drop table private.operator_alerts;
drop index private.idx_stripe_events_pending;
-- Outcomes that did not exist before 15: their events stay recorded (a redelivery is still a duplicate).
update private.stripe_events set outcome = 'ignored' where outcome in ('unlinked', 'unmatched_price', 'unreadable');
alter table private.stripe_events drop constraint stripe_events_outcome_check;
alter table private.stripe_events add constraint stripe_events_outcome_check
  check (outcome in ('applied', 'ignored', 'stale'));
alter table private.stripe_events
  drop column pending_snapshot,
  drop column stripe_subscription_id,
  drop column stripe_customer_id,
  drop column api_version;
alter table public.subscriptions drop column stripe_created_at;
comment on table public.subscriptions is 'One row per Stripe subscription; at most one live per user.';
create unique index subscriptions_one_live_per_user on public.subscriptions (user_id)
  where status in ('trialing', 'active', 'past_due', 'unpaid', 'paused');
