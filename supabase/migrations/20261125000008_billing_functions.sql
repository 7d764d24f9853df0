-- 8. Billing functions
--
-- What the billing Lambdas call (schema `service`, service_role only). The Stripe webhook handler verifies
-- and parses an event, turns it into a normalized subscription snapshot, and hands both to
-- service.apply_stripe_event, which applies them atomically:
--   - the event id is recorded in private.stripe_events in the same transaction as its effects, so a
--     redelivery (or 20 concurrent ones) finds it and changes nothing;
--   - a snapshot older than the last one applied to that subscription is dropped as stale; one from the
--     same second as a different applied event is not guessed at: the caller re-reads Stripe and retries;
--   - every status or plan change is written to subscription_changes.
--
-- Snapshot (jsonb), as built by functions/billing/stripe_objects.py:
--   {"version": ts, "fresh": bool, "user_id": uuid?, "stripe_customer_id": ..., "deleted_customer": ...?,
--    "subscription": {"stripe_subscription_id", "stripe_customer_id", "status", "price_id", "price_lookup_key",
--                     "trial_start", "trial_end", "current_period_start", "current_period_end",
--                     "cancel_at_period_end", "canceled_at", "ended_at", "user_id"}?}
-- `fresh` marks a snapshot just read from Stripe's API, which wins any tie.

create function private.plan_for_price(price_id text, lookup_key text) returns uuid
language sql stable
set search_path = ''
as $$
  select id from public.plans
  where stripe_price_id = price_id or (lookup_key is not null and code = lookup_key)
  order by (stripe_price_id = price_id) desc nulls last
  limit 1
$$;

-- Upsert one subscription from a snapshot; returns the change made ('stale', 'needs_refresh', 'unchanged',
-- 'created', 'updated').
create function private.apply_subscription_snapshot(
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

-- A deleted Stripe customer: the next checkout creates a new one, and its live subscriptions end.
create function private.apply_customer_deletion(
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

-- The webhook's one call. `event`: {"id", "type", "created", "livemode", "payload"}; `snapshot` as above, or
-- null for an event type the platform does not act on. Returns {"outcome": ..., "change": ...} where outcome
-- is 'applied', 'ignored', 'stale', 'duplicate' or 'needs_refresh' (nothing written: re-read Stripe, retry).
create function service.apply_stripe_event(event jsonb, snapshot jsonb default null) returns jsonb
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

-- The same snapshot application for resync: Stripe's current state, read from its API, wins.
create function service.sync_subscription(snapshot jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  change text;
begin
  change := private.apply_subscription_snapshot(
    snapshot || jsonb_build_object('fresh', true), 'resync', 'resync', (snapshot ->> 'version')::timestamptz
  );
  return jsonb_build_object('change', change);
end
$$;

-- What checkout needs to know about a user, in one round trip.
create function service.checkout_context(user_id uuid, plan_code text) returns jsonb
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

-- Store the customer created at checkout; if a concurrent checkout stored one first, that one wins.
create function service.link_billing_customer(user_id uuid, stripe_customer_id text) returns jsonb
language sql
set search_path = ''
as $$
  -- Concurrent checkouts link the same customer: one at a time, or the second insert would break the unique
  -- stripe_customer_id (which `on conflict` on the primary key does not arbitrate) instead of finding the row.
  select pg_advisory_xact_lock(hashtext('service.link_billing_customer'), hashtext(link_billing_customer.user_id::text));
  insert into public.billing_customers as c (user_id, stripe_customer_id)
  values (link_billing_customer.user_id, link_billing_customer.stripe_customer_id)
  on conflict on constraint billing_customers_pkey do update
    set stripe_customer_id = excluded.stripe_customer_id, deleted_at = null
    where c.deleted_at is not null;
  select jsonb_build_object('stripe_customer_id', c.stripe_customer_id)
  from public.billing_customers c where c.user_id = link_billing_customer.user_id;
$$;

create function service.billing_customer(user_id uuid) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  customer text;
begin
  select c.stripe_customer_id into customer from public.billing_customers c
  where c.user_id = billing_customer.user_id and c.deleted_at is null;
  if customer is null then
    raise sqlstate 'PT404' using
      message = 'you have no billing account yet',
      hint = 'Subscribe first with POST /billing/checkout.';
  end if;
  return jsonb_build_object('stripe_customer_id', customer);
end
$$;

revoke all on function private.plan_for_price(text, text), private.apply_subscription_snapshot(jsonb, text, text, timestamptz),
  private.apply_customer_deletion(text, text, text, timestamptz) from public, anon, authenticated;
grant execute on function private.plan_for_price(text, text), private.apply_subscription_snapshot(jsonb, text, text, timestamptz),
  private.apply_customer_deletion(text, text, text, timestamptz) to service_role;

revoke all on function service.apply_stripe_event(jsonb, jsonb), service.sync_subscription(jsonb),
  service.checkout_context(uuid, text), service.link_billing_customer(uuid, text), service.billing_customer(uuid)
  from public, anon, authenticated;
grant execute on function service.apply_stripe_event(jsonb, jsonb), service.sync_subscription(jsonb),
  service.checkout_context(uuid, text), service.link_billing_customer(uuid, text), service.billing_customer(uuid)
  to service_role;
