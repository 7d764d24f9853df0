-- 15. Billing under real Stripe traffic
--
-- What Stripe sends is a fact: the webhook records every event and never refuses one for a state Stripe
-- already reached. Cases the platform cannot act on alone become operator alerts (private.operator_alerts,
-- docs/operations.md "Billing alerts"):
--   - duplicate_live_subscriptions: a user with two or more live subscriptions (two checkouts in two tabs, a
--     subscription created by support). Both are recorded; public.entitlements picks the one that grants:
--     the highest plan (plans.sort_order), ties by the earliest created in Stripe, then the subscription id.
--   - unlinked_customer: an event for a Stripe customer no user is linked to. The event is recorded with
--     outcome 'unlinked' and its snapshot kept; it is applied as soon as that customer is linked (a later event,
--     a checkout, `prep billing link`, `prep billing resync`).
--   - unknown_price: a subscription on a price no plan has. Recorded 'unmatched_price' with its snapshot, applied
--     once the price is configured and `prep billing resync` runs (why not a 5xx: docs/operations.md).
--   - unreadable_event: an event in another API version whose object the webhook cannot read.
-- The snapshot of migration 8 gains `subscription.created` (Stripe's, for the tie-break), and the event envelope
-- `api_version`, recorded with each event.

-- Several live subscriptions per user are recorded rather than refused (see above).
drop index public.subscriptions_one_live_per_user;
comment on table public.subscriptions is
  'One row per Stripe subscription. A user may have several live ones; public.entitlements picks which grants.';

-- When Stripe created the subscription: the entitlement tie-break. Null for rows written before migration 15.
alter table public.subscriptions add column stripe_created_at timestamptz;

-- The API version each event came in, what it was about, and the snapshot still waiting for a link or a plan.
alter table private.stripe_events
  add column api_version text,
  add column stripe_customer_id text,
  add column stripe_subscription_id text,
  add column pending_snapshot jsonb;
alter table private.stripe_events drop constraint stripe_events_outcome_check;
alter table private.stripe_events add constraint stripe_events_outcome_check
  check (outcome in ('applied', 'ignored', 'stale', 'unlinked', 'unmatched_price', 'unreadable'));
create index idx_stripe_events_pending on private.stripe_events (stripe_customer_id)
  where pending_snapshot is not null;

-- What the operator must look at. One open alert per (kind, subject); a repeat bumps last_seen_at/occurrences.
create table private.operator_alerts (
  id bigint generated always as identity primary key,
  kind text not null check (kind in ('duplicate_live_subscriptions', 'unlinked_customer', 'unknown_price',
                                     'unreadable_event')),
  -- What the alert is about: a user id, a Stripe customer id, a Stripe price id, or '<event type> @ <version>'.
  subject text not null check (length(subject) between 1 and 300),
  detail jsonb not null default '{}' check (jsonb_typeof(detail) = 'object'),
  occurrences integer not null default 1 check (occurrences >= 1),
  first_seen_at timestamptz not null default now(),
  last_seen_at timestamptz not null default now(),
  resolved_at timestamptz,
  resolution text check (length(resolution) <= 500),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create unique index operator_alerts_one_open on private.operator_alerts (kind, subject) where resolved_at is null;
create trigger set_updated_at before update on private.operator_alerts
  for each row execute function private.set_updated_at();
alter table private.operator_alerts enable row level security;
revoke all on private.operator_alerts from public, anon, authenticated;
grant select, insert, update, delete on private.operator_alerts to service_role;

create function private.raise_operator_alert(alert_kind text, alert_subject text, alert_detail jsonb) returns void
language sql
set search_path = ''
as $$
  insert into private.operator_alerts as a (kind, subject, detail)
  values (alert_kind, left(alert_subject, 300), alert_detail)
  on conflict (kind, subject) where resolved_at is null do update
    set detail = excluded.detail, last_seen_at = now(), occurrences = a.occurrences + 1;
$$;

create function private.resolve_operator_alert(alert_kind text, alert_subject text, why text) returns void
language sql
set search_path = ''
as $$
  update private.operator_alerts set resolved_at = now(), resolution = why
  where kind = alert_kind and subject = alert_subject and resolved_at is null;
$$;

-- Open or close the duplicate_live_subscriptions alert of a user after their subscriptions changed.
create function private.check_live_subscriptions(owner uuid) returns void
language plpgsql
set search_path = ''
as $$
declare
  live jsonb;
begin
  select jsonb_agg(jsonb_build_object('stripe_subscription_id', s.stripe_subscription_id,
                                      'stripe_customer_id', s.stripe_customer_id, 'status', s.status,
                                      'plan', p.code)
                   order by p.sort_order desc, coalesce(s.stripe_created_at, s.created_at), s.stripe_subscription_id)
  into live
  from public.subscriptions s join public.plans p on p.id = s.plan_id
  where s.user_id = owner and s.status in ('trialing', 'active', 'past_due', 'unpaid', 'paused');
  if jsonb_array_length(coalesce(live, '[]')) > 1 then
    perform private.raise_operator_alert('duplicate_live_subscriptions', owner::text,
                                         jsonb_build_object('user_id', owner, 'live', live));
  else
    perform private.resolve_operator_alert('duplicate_live_subscriptions', owner::text,
                                           'at most one live subscription left');
  end if;
end
$$;

-- A user's effective plan right now. Trialing and active subscriptions grant their plan; a past_due one keeps
-- it for the plan's grace period after the unpaid period began (Stripe retries the charge meanwhile);
-- anything else falls back to the free plan. Of several granting subscriptions, the highest plan
-- (plans.sort_order) wins, ties by the one Stripe created first. Security invoker: a user can only ever learn
-- their own.
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
    order by p.sort_order desc, coalesce(s.stripe_created_at, s.created_at), s.stripe_subscription_id
    limit 1
  )
  select code, name, status, true, features, usage_limits, current_period_end from paid
  union all
  select p.code, p.name, null, false, p.features, p.usage_limits, null
  from public.plans p
  where p.code = 'free' and not exists (select from paid)
$$;

-- Deleting a user whose subscriptions Stripe still charges: refused, naming every one of them.
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

-- Upsert one subscription from a snapshot; returns the change made ('stale', 'needs_refresh', 'unchanged',
-- 'created', 'updated'), or why it could not be applied yet ('unmatched_price', 'unlinked', each with an alert).
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

-- Apply the snapshots of events recorded 'unlinked' or 'unmatched_price' (of one customer, or all), oldest
-- first; what still cannot be applied stays pending. Closes the alerts nothing is pending for any more.
-- Returns how many were applied (or found stale).
create function private.apply_pending_events(customer text default null) returns integer
language plpgsql
set search_path = ''
as $$
declare
  pending record;
  snapshot jsonb;
  change text;
  done integer := 0;
begin
  if customer is not null and not exists (
    select from private.stripe_events e where e.stripe_customer_id = customer and e.pending_snapshot is not null
  ) then
    return 0;  -- the common case: one index probe
  end if;
  for pending in
    select e.id, e.type, e.stripe_created_at from private.stripe_events e
    where e.pending_snapshot is not null and (customer is null or e.stripe_customer_id = customer)
    order by (e.pending_snapshot ->> 'version')::timestamptz, e.stripe_created_at, e.id
  loop
    -- Taken off the pending list before applying: applying it links its customer, which applies that customer's
    -- pending events (this one must not be among them). An earlier one may have applied it already.
    select e.pending_snapshot into snapshot from private.stripe_events e where e.id = pending.id for update;
    continue when snapshot is null;
    update private.stripe_events set pending_snapshot = null where id = pending.id;
    change := private.apply_subscription_snapshot(snapshot, pending.id, pending.type, pending.stripe_created_at);
    if change in ('unlinked', 'unmatched_price') then
      update private.stripe_events set pending_snapshot = snapshot, outcome = change where id = pending.id;
    else
      -- needs_refresh: another event of the same second was applied meanwhile; resync reads Stripe's state.
      update private.stripe_events
      set outcome = case when change in ('stale', 'needs_refresh') then 'stale' else 'applied' end
      where id = pending.id;
      done := done + 1;
    end if;
  end loop;

  update private.operator_alerts a set resolved_at = now(), resolution = 'customer linked, its events applied'
  where a.kind = 'unlinked_customer' and a.resolved_at is null
    and exists (select from public.billing_customers c where c.stripe_customer_id = a.subject)
    and not exists (select from private.stripe_events e
                    where e.pending_snapshot is not null and e.stripe_customer_id = a.subject);
  update private.operator_alerts a set resolved_at = now(), resolution = 'price configured, its events applied'
  where a.kind = 'unknown_price' and a.resolved_at is null
    and exists (select from public.plans p where p.stripe_price_id = a.subject)
    and not exists (select from private.stripe_events e
                    where e.outcome = 'unmatched_price' and e.pending_snapshot -> 'subscription' ->> 'price_id' = a.subject);
  return done;
end
$$;

-- A deleted Stripe customer: the next checkout creates a new one, and its live subscriptions end.
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
    perform private.check_live_subscriptions(ended.user_id);
    changed := changed + 1;
  end loop;
  return case when changed > 0 then 'updated' else 'unchanged' end;
end
$$;

-- The webhook's one call. `event`: {"id", "type", "created", "livemode", "api_version", "payload"}; `snapshot`
-- as in migration 8, {"unreadable": reason} for an object the webhook could not read, or null for an event type
-- the platform does not act on. Returns {"outcome": ..., "change": ...} where outcome is 'applied', 'ignored',
-- 'stale', 'duplicate', 'unlinked' / 'unmatched_price' (recorded, applied later), 'unreadable', or
-- 'needs_refresh' (nothing written: re-read Stripe, retry).
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
  insert into private.stripe_events (id, type, stripe_created_at, livemode, outcome, payload, api_version,
                                     stripe_customer_id, stripe_subscription_id)
  values (event_id, event_type, event_created, coalesce((event ->> 'livemode')::boolean, false), 'applied',
          coalesce(event -> 'payload', '{}'), left(event ->> 'api_version', 100),
          coalesce(snapshot -> 'subscription' ->> 'stripe_customer_id', snapshot ->> 'deleted_customer'),
          snapshot -> 'subscription' ->> 'stripe_subscription_id')
  on conflict (id) do nothing;
  if not found then
    return jsonb_build_object('outcome', 'duplicate', 'change', change);
  end if;

  if snapshot is null then
    result := 'ignored';
  elsif snapshot ? 'unreadable' then
    -- Never silently ignored: Stripe would not send it again, so the operator must know (and resync).
    perform private.raise_operator_alert('unreadable_event',
      format('%s @ %s', event_type, coalesce(event ->> 'api_version', 'no api_version')),
      jsonb_build_object('stripe_event_id', event_id, 'api_version', event ->> 'api_version',
                         'reason', left(snapshot ->> 'unreadable', 1000)));
    result := 'unreadable';
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
    result := case when change in ('stale', 'unlinked', 'unmatched_price') then change else 'applied' end;
  else
    result := 'applied';  -- handled, nothing to change (e.g. a trial ending soon)
  end if;

  update private.stripe_events
  set outcome = result, pending_snapshot = case when result in ('unlinked', 'unmatched_price') then snapshot end
  where id = event_id;
  return jsonb_build_object('outcome', result, 'change', change);
end
$$;

-- For `prep billing resync` and `prep billing link`: apply every pending event that can be applied now.
create function service.apply_pending_stripe_events() returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  applied integer := private.apply_pending_events(null);
begin
  return jsonb_build_object(
    'applied', applied,
    'still_pending', (select count(*) from private.stripe_events where pending_snapshot is not null));
end
$$;

-- The operator's alerts, open ones first, newest first (at most `max_rows`).
create function service.operator_alerts(include_resolved boolean default false, max_rows integer default 200)
returns jsonb
language sql stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(to_jsonb(a) - 'created_at' - 'updated_at'
                            order by a.resolved_at desc nulls first, a.last_seen_at desc, a.id desc), '[]')
  from (select * from private.operator_alerts a
        where include_resolved or a.resolved_at is null
        order by a.resolved_at desc nulls first, a.last_seen_at desc, a.id desc
        limit least(greatest(max_rows, 1), 1000)) a
$$;

-- The operator closes an alert by hand (once the cause is dealt with); returns it.
create function service.resolve_operator_alert(alert_id bigint, resolution text) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  closed private.operator_alerts;
begin
  update private.operator_alerts a set resolved_at = now(), resolution = left(resolve_operator_alert.resolution, 500)
  where a.id = alert_id and a.resolved_at is null
  returning * into closed;
  if not found then
    raise sqlstate 'PT404' using message = format('no open alert %s', alert_id),
      hint = 'List them with `prep billing alerts`.';
  end if;
  return to_jsonb(closed) - 'created_at' - 'updated_at';
end
$$;

revoke all on function private.raise_operator_alert(text, text, jsonb), private.resolve_operator_alert(text, text, text),
  private.check_live_subscriptions(uuid), private.apply_pending_events(text) from public, anon, authenticated;
grant execute on function private.raise_operator_alert(text, text, jsonb), private.resolve_operator_alert(text, text, text),
  private.check_live_subscriptions(uuid), private.apply_pending_events(text) to service_role;
revoke all on function service.apply_pending_stripe_events(), service.operator_alerts(boolean, integer),
  service.resolve_operator_alert(bigint, text) from public, anon, authenticated;
grant execute on function service.apply_pending_stripe_events(), service.operator_alerts(boolean, integer),
  service.resolve_operator_alert(bigint, text) to service_role;
