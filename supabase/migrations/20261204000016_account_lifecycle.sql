-- 16. Account lifecycle (GDPR articles 15, 17, 20): deleting an account on its owner's or an operator's request,
-- resumably, and exporting everything an account owns.
--
-- Deletion runs in steps (functions/account/deletion.py): the request is recorded first; Stripe (every live
-- subscription cancelled, the customer deleted) and Storage (every object under the user's folder of the answers
-- bucket) are outside the database and may fail, so each is marked done only once it is; the last step deletes the
-- auth user in one transaction, whose cascade and the trigger below remove every row the user owns. A failed step
-- leaves the database as it was, with the attempt recorded; the scheduled retry (service.due_account_deletions)
-- resumes where it stopped.

-- One row a requested deletion. No foreign key to users: the row outlives the user. Once the deletion is complete
-- the row keeps only a tombstone: the SHA-256 of the user id (to answer "was this account deleted, and when?" and to
-- redact Stripe events that arrive about it later), never the id itself.
create table private.account_deletions (
  user_hash text primary key check (user_hash ~ '^[0-9a-f]{64}$'),
  user_id uuid unique,
  requested_by text not null check (requested_by in ('user', 'operator')),
  requested_at timestamptz not null default now(),
  stripe_done_at timestamptz,
  storage_done_at timestamptz,
  completed_at timestamptz,
  attempts integer not null default 0,
  last_error text check (char_length(last_error) <= 1000),
  next_attempt_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check ((completed_at is null) = (user_id is not null))
);
comment on table private.account_deletions is
  'Requested account deletions: pending ones by user id, completed ones as a tombstone (a hash of the id).';
create index idx_account_deletions_due on private.account_deletions (next_attempt_at nulls first)
  where completed_at is null;
create trigger set_updated_at before update on private.account_deletions
  for each row execute function private.set_updated_at();
alter table private.account_deletions enable row level security;
grant select, insert, update on private.account_deletions to service_role;

create function private.user_hash(user_id uuid) returns text
language sql immutable
set search_path = ''
as $$
  select encode(sha256(convert_to(user_id::text, 'UTF8')), 'hex')
$$;
revoke all on function private.user_hash(uuid) from public, anon, authenticated;
grant execute on function private.user_hash(uuid) to service_role;

-- When the owner (or an operator) asked for the account's deletion: the client reads it with the user's own row
-- (say so at sign-in), the upload policy and the triggers below refuse new work while it is set.
alter table public.users add column deletion_requested_at timestamptz;
comment on column public.users.deletion_requested_at is
  'When the account''s deletion was requested; set only by service.request_account_deletion.';

-- While a deletion is pending its user starts no new work: a session, an answer or a rating written now could
-- land after the step that would have removed it (a recording uploaded after the Storage step would outlive the
-- account). The writer reads their own users row (RLS allows it).
create function private.refuse_work_while_deleting() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if exists (select from public.users u where u.id = new.user_id and u.deletion_requested_at is not null) then
    raise sqlstate 'PT409' using
      message = 'this account is being deleted',
      hint = 'The deletion was requested and cannot be undone; nothing new can be saved to the account.';
  end if;
  return new;
end
$$;
revoke all on function private.refuse_work_while_deleting() from public, anon, authenticated;
create trigger refuse_work_while_deleting before insert on public.practice_sessions
  for each row execute function private.refuse_work_while_deleting();
create trigger refuse_work_while_deleting before insert on public.responses
  for each row execute function private.refuse_work_while_deleting();
create trigger refuse_work_while_deleting before insert on public.question_ratings
  for each row execute function private.refuse_work_while_deleting();

-- Recordings: the upload policy also refuses a user whose deletion is pending (objects are not written through a
-- table trigger here: Storage owns that table). stored_recordings() answers 200, the per-user maximum, for them.
create or replace function public.stored_recordings() returns integer
language plpgsql stable
set search_path = ''
as $$
begin
  if exists (select from public.users u where u.id = (select auth.uid()) and u.deletion_requested_at is not null)
  then
    return 200;
  end if;
  return (select count(*) from storage.objects o
          where o.bucket_id = 'answers' and o.name like (select auth.uid())::text || '/%');
end
$$;

-- Every Stripe event is filed under the customer it is about (migration 15 does so for the events it applies; the
-- rest name theirs at data.object.customer, or are the customer): a deleted account's events are then found by
-- index, never by reading every payload. Customers of deleted accounts are remembered only as hashes.
create table private.deleted_stripe_customers (
  customer_hash text primary key check (customer_hash ~ '^[0-9a-f]{64}$'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create trigger set_updated_at before update on private.deleted_stripe_customers
  for each row execute function private.set_updated_at();
alter table private.deleted_stripe_customers enable row level security;
revoke all on private.deleted_stripe_customers from public, anon, authenticated;
grant select on private.deleted_stripe_customers to service_role;

create function private.stripe_event_customer(payload jsonb) returns text
language sql immutable
set search_path = ''
as $$
  select case
    when jsonb_typeof(payload #> '{data,object,customer}') = 'string' then payload #>> '{data,object,customer}'
    when payload #>> '{data,object,object}' = 'customer' then payload #>> '{data,object,id}'
  end
$$;
revoke all on function private.stripe_event_customer(jsonb) from public, anon, authenticated;

update private.stripe_events e set stripe_customer_id = private.stripe_event_customer(e.payload)
where e.stripe_customer_id is null;
create index idx_stripe_events_customer on private.stripe_events (stripe_customer_id);
-- The few events about no customer at all, which a deletion still reads (for the user id in their payload).
create index idx_stripe_events_no_customer on private.stripe_events (id) where stripe_customer_id is null;

-- Rows a user owns without a foreign key to users go with the user, whichever way the user is deleted (this flow,
-- the dashboard, Auth's admin API): archived answers, and Stripe events about the user's customers or naming the
-- user (their payloads carry the customer's email and metadata.user_id) keep their id and outcome (so a
-- redelivery is still recognised as a duplicate) but lose their payload. Before delete: the customer ids are
-- still readable.
create function private.forget_deleted_user() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  customers text[];
  redacted constant jsonb := jsonb_build_object('redacted', 'account deleted');
begin
  delete from archive.responses a where a.user_id = old.id;
  -- AI usage stays in the platform's books, anonymised. Both of its foreign keys (user_id, response_id) would be set
  -- null row by row by the cascade (twice per answer); one statement does it first.
  update public.ai_usage a set user_id = null, response_id = null where a.user_id = old.id;
  select coalesce(array_agg(distinct c), '{}') into customers
  from (select c.stripe_customer_id as c from public.billing_customers c where c.user_id = old.id
        union select s.stripe_customer_id from public.subscriptions s where s.user_id = old.id) found
  where c is not null;
  insert into private.deleted_stripe_customers (customer_hash)
  select encode(sha256(convert_to(c, 'UTF8')), 'hex') from unnest(customers) c
  on conflict do nothing;
  update private.stripe_events e set payload = redacted, stripe_customer_id = null, stripe_subscription_id = null,
    pending_snapshot = null
  where e.stripe_customer_id = any (customers);
  -- Operator alerts about the account (two live subscriptions, its customers) end with it.
  delete from private.operator_alerts a
  where a.subject = old.id::text or a.subject = any (customers) or a.detail::text like '%' || old.id::text || '%';
  -- Events about no customer, or about one nobody was linked to yet, may still name the user.
  update private.stripe_events e set payload = redacted, stripe_customer_id = null, stripe_subscription_id = null,
    pending_snapshot = null
  where (e.stripe_customer_id is null or e.pending_snapshot is not null)
    and e.payload::text like '%' || old.id::text || '%';
  return old;
end
$$;
revoke all on function private.forget_deleted_user() from public, anon, authenticated;
create trigger forget_deleted_user before delete on public.users
  for each row execute function private.forget_deleted_user();

-- Each event is filed under its customer as it is recorded; one about a deleted account (cancelling sends
-- customer.subscription.deleted and customer.deleted after it is gone) is stored redacted.
create function private.file_stripe_event() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  named text := new.payload #>> '{data,object,metadata,user_id}';
begin
  new.stripe_customer_id := coalesce(new.stripe_customer_id, private.stripe_event_customer(new.payload));
  if (new.stripe_customer_id is not null and exists (
        select from private.deleted_stripe_customers d
        where d.customer_hash = encode(sha256(convert_to(new.stripe_customer_id, 'UTF8')), 'hex')))
     or (named ~ '^[0-9a-fA-F-]{36}$' and exists (
        select from private.account_deletions d
        where d.user_hash = private.user_hash(named::uuid) and d.completed_at is not null)) then
    new.payload := jsonb_build_object('redacted', 'account deleted');
    new.stripe_customer_id := null;
    new.stripe_subscription_id := null;
  end if;
  return new;
end
$$;
revoke all on function private.file_stripe_event() from public, anon, authenticated;
create trigger file_stripe_event before insert or update of payload on private.stripe_events
  for each row execute function private.file_stripe_event();

-- Snapshots of subscriptions as in migration 15, but those of a deleted account's customers are not applied.
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

  -- A deleted account's subscriptions (its own cancellation events arrive after it is gone): nothing to apply,
  -- nothing to alert about, no user id to keep.
  if is_new and exists (
    select from private.deleted_stripe_customers d
    where d.customer_hash = encode(sha256(convert_to(sub ->> 'stripe_customer_id', 'UTF8')), 'hex')
  ) then
    return 'unchanged';
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

-- Nor does it subscribe: a checkout finished after the Stripe step would leave a subscription no one cancels.
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
  if exists (select from public.users u
             where u.id = checkout_context.user_id and u.deletion_requested_at is not null) then
    raise sqlstate 'PT409' using
      message = 'this account is being deleted',
      hint = 'A deleted account cannot subscribe; sign up again once the deletion is complete.';
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

-- A billed user may be deleted once the deletion flow has cancelled their billing in Stripe (the cancellation
-- events may not have arrived yet, so the rows can still say 'active').
create or replace function private.refuse_deleting_billed_users() returns trigger
language plpgsql
set search_path = ''
as $$
declare
  billed text;
begin
  if exists (select from private.account_deletions d where d.user_id = old.id and d.stripe_done_at is not null) then
    return old;
  end if;
  select string_agg(s.stripe_subscription_id, ', ' order by s.stripe_subscription_id) into billed
  from public.subscriptions s
  where s.user_id = old.id and s.status in ('trialing', 'active', 'past_due', 'unpaid') and not s.cancel_at_period_end;
  if billed is not null then
    raise sqlstate 'PT409' using
      message = format('user %s still has subscription(s) %s, which Stripe keeps charging', old.id, billed),
      hint = 'Delete the account with `prep users delete`, which cancels its billing first; or cancel them (the '
             || 'billing portal, or the Stripe dashboard) and delete the user once the cancellation events arrive.';
  end if;
  return old;
end
$$;

-- The state of a deletion as the flow needs it: which steps are done, and what Stripe must cancel and delete.
-- Every subscription Stripe may still charge or resume counts (a user may have more than one).
create function private.account_deletion_state(user_id uuid) returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
    'user_id', d.user_id,
    'status', case when d.completed_at is not null then 'deleted' else 'pending' end,
    'requested_at', d.requested_at,
    'stripe_done', d.stripe_done_at is not null,
    'storage_done', d.storage_done_at is not null,
    'attempts', d.attempts,
    'last_error', d.last_error,
    'next_attempt_at', d.next_attempt_at,
    'subscriptions', coalesce((
      select jsonb_agg(s.stripe_subscription_id order by s.created_at) from public.subscriptions s
      where s.user_id = d.user_id and s.stripe_subscription_id is not null
        and s.status in ('incomplete', 'trialing', 'active', 'past_due', 'unpaid', 'paused')), '[]'),
    'customers', coalesce((
      select jsonb_agg(distinct c.id) from (
        select b.stripe_customer_id as id from public.billing_customers b
        where b.user_id = d.user_id and b.deleted_at is null
        union select s.stripe_customer_id from public.subscriptions s
        where s.user_id = d.user_id and s.stripe_customer_id is not null
          and s.status in ('incomplete', 'trialing', 'active', 'past_due', 'unpaid', 'paused')) c), '[]'))
  from private.account_deletions d
  where d.user_hash = private.user_hash(account_deletion_state.user_id)
$$;
revoke all on function private.account_deletion_state(uuid) from public, anon, authenticated;
grant execute on function private.account_deletion_state(uuid) to service_role;

-- An account by id or email, for the operator console. Unknown: 404.
create function service.find_account(identifier text) returns uuid
language plpgsql stable
set search_path = ''
as $$
declare
  found_id uuid;
begin
  if identifier ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    select u.id into found_id from public.users u where u.id = identifier::uuid;
  elsif char_length(identifier) <= 320 then
    select u.id into found_id from public.users u where lower(u.email) = lower(btrim(identifier));
  end if;
  if found_id is null then
    raise sqlstate 'PT404' using message = format('no account with id or email %L', left(identifier, 320));
  end if;
  return found_id;
end
$$;

-- Record a deletion request (idempotent: a second request returns the pending one). `confirm`, when given (the
-- user's own request), must be the account's email, or its id for an account without one.
create function service.request_account_deletion(user_id uuid, requested_by text, confirm text default null)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  account public.users;
begin
  select * into account from public.users u where u.id = request_account_deletion.user_id;
  if not found then
    if exists (select from private.account_deletions d
               where d.user_hash = private.user_hash(request_account_deletion.user_id) and d.completed_at is not null)
    then
      return private.account_deletion_state(request_account_deletion.user_id);
    end if;
    raise sqlstate 'PT404' using message = 'no such account';
  end if;
  if requested_by = 'user' and lower(btrim(coalesce(confirm, ''))) <> lower(coalesce(account.email, account.id::text))
  then
    raise sqlstate 'PT400' using
      message = 'the confirmation does not match this account',
      hint = 'Send {"confirm": "<the email address of this account>"} to delete it.';
  end if;
  insert into private.account_deletions (user_hash, user_id, requested_by)
  values (private.user_hash(account.id), account.id, requested_by)
  on conflict (user_hash) do nothing;
  update public.users u set deletion_requested_at = now()
  where u.id = account.id and u.deletion_requested_at is null;
  return private.account_deletion_state(account.id);
end
$$;

-- A step done ('stripe', 'storage'), or failed (error given: retried after a growing delay, 1 min to 6 h).
create function service.record_account_deletion_step(user_id uuid, step text, error text default null)
returns jsonb
language plpgsql
set search_path = ''
as $$
begin
  if step not in ('stripe', 'storage') then
    raise sqlstate 'PT400' using message = format('unknown deletion step %L', step);
  end if;
  update private.account_deletions d set
    stripe_done_at = case when step = 'stripe' and error is null then coalesce(d.stripe_done_at, now())
                          else d.stripe_done_at end,
    storage_done_at = case when step = 'storage' and error is null then coalesce(d.storage_done_at, now())
                           else d.storage_done_at end,
    attempts = d.attempts + (error is not null)::integer,
    last_error = case when error is null then d.last_error else left(step || ': ' || error, 1000) end,
    next_attempt_at = case when error is null then d.next_attempt_at
                           else now() + least(interval '1 minute' * power(2, least(d.attempts, 10)), interval '6 hours')
                      end
  where d.user_id = record_account_deletion_step.user_id and d.completed_at is null;
  if not found then
    raise sqlstate 'PT404' using message = 'no pending deletion for this account';
  end if;
  return private.account_deletion_state(record_account_deletion_step.user_id);
end
$$;

-- The auth user and, by cascade, every row with a foreign key to it. Security definer: auth.users belongs to Supabase
-- Auth, and only its owner and the postgres role (this function's owner) may delete from it.
create function private.delete_auth_user(user_id uuid) returns void
language sql
security definer
set search_path = ''
as $$
  delete from auth.users u where u.id = delete_auth_user.user_id
$$;
revoke all on function private.delete_auth_user(uuid) from public, anon, authenticated;
grant execute on function private.delete_auth_user(uuid) to service_role;

-- The account as Supabase Auth holds it, without credentials or tokens (for the export). Security definer, as above.
create function private.auth_account(user_id uuid) returns jsonb
language sql stable
security definer
set search_path = ''
as $$
  select jsonb_build_object(
    'account', (select jsonb_build_object('id', u.id, 'email', u.email, 'phone', u.phone, 'created_at', u.created_at,
                                          'email_confirmed_at', u.email_confirmed_at,
                                          'last_sign_in_at', u.last_sign_in_at, 'user_metadata', u.raw_user_meta_data,
                                          'app_metadata', u.raw_app_meta_data)
                from auth.users u where u.id = auth_account.user_id),
    'identities', (select coalesce(jsonb_agg(jsonb_build_object('provider', i.provider, 'email', i.email,
                                                                'identity_data', i.identity_data,
                                                                'created_at', i.created_at,
                                                                'last_sign_in_at', i.last_sign_in_at)), '[]')
                   from auth.identities i where i.user_id = auth_account.user_id))
$$;
revoke all on function private.auth_account(uuid) from public, anon, authenticated;
grant execute on function private.auth_account(uuid) to service_role;

-- Before the last step, the account's answers go in short transactions of at most batch_size rows (archived first),
-- so the final transaction stays small and other users' commits never wait behind one long one. Only once Stripe and
-- Storage are done (the account is going: its owner can no longer add answers). Returns how many went; 0 when none
-- are left. Repeating it after a crash is harmless.
create function service.purge_account_answers(user_id uuid, batch_size integer default 1000) returns integer
language plpgsql
set search_path = ''
as $$
declare
  deletion private.account_deletions;
  batch integer := least(greatest(batch_size, 1), 10000);
  purged integer;
begin
  select * into deletion from private.account_deletions d
  where d.user_hash = private.user_hash(purge_account_answers.user_id);
  if not found or deletion.completed_at is not null then
    return 0;
  end if;
  if deletion.stripe_done_at is null or deletion.storage_done_at is null then
    raise sqlstate 'PT409' using message = 'billing and recordings must be removed before the account';
  end if;
  delete from archive.responses a
  where a.id in (select a2.id from archive.responses a2 where a2.user_id = purge_account_answers.user_id limit batch);
  get diagnostics purged = row_count;
  if purged > 0 then
    return purged;
  end if;
  with doomed as (
    select r.id from public.responses r where r.user_id = purge_account_answers.user_id limit batch
  ), anonymised as (
    -- AI usage stays in the platform's books without its answer (what the cascade would do row by row).
    update public.ai_usage a set user_id = null, response_id = null
    where a.response_id in (select id from doomed)
  )
  delete from public.responses r where r.id in (select id from doomed);
  get diagnostics purged = row_count;
  return purged;
end
$$;

-- The last step, in one transaction: the auth user goes (the cascade takes every row with a foreign key to it, the
-- triggers above the rest), and the record becomes a tombstone. Refused until Stripe and Storage are done.
create function service.complete_account_deletion(user_id uuid) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  deletion private.account_deletions;
begin
  select * into deletion from private.account_deletions d
  where d.user_hash = private.user_hash(complete_account_deletion.user_id) for update;
  if not found then
    raise sqlstate 'PT404' using message = 'no deletion was requested for this account';
  end if;
  if deletion.completed_at is not null then
    return private.account_deletion_state(complete_account_deletion.user_id);
  end if;
  if deletion.stripe_done_at is null or deletion.storage_done_at is null then
    raise sqlstate 'PT409' using message = 'billing and recordings must be removed before the account';
  end if;
  perform private.delete_auth_user(complete_account_deletion.user_id);
  update private.account_deletions d
  set user_id = null, completed_at = now(), last_error = null, next_attempt_at = null
  where d.user_hash = deletion.user_hash;
  return private.account_deletion_state(complete_account_deletion.user_id);
end
$$;

-- Pending deletions whose retry is due (their states), oldest first, for the scheduled retry.
create function service.due_account_deletions(max_count integer default 50) returns jsonb
language sql stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(private.account_deletion_state(d.user_id) order by d.requested_at), '[]')
  from (select d.user_id, d.requested_at from private.account_deletions d
        where d.completed_at is null and (d.next_attempt_at is null or d.next_attempt_at <= now())
        order by d.next_attempt_at nulls first, d.requested_at
        limit least(greatest(max_count, 1), 500)) d
$$;

-- Everything an account owns, as one JSON document per page. The first page (answers_after null) holds every
-- section; answers (live and archived, oldest first) are paged by size: a page holds answers until their JSON
-- reaches max_bytes (at least one), and `next` is the cursor of the following page (null on the last).
create function service.export_account(user_id uuid, answers_after jsonb default null, max_bytes integer default 4000000)
returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  uid uuid := export_account.user_id;
  after_at timestamptz := (answers_after ->> 'created_at')::timestamptz;
  after_id uuid := (answers_after ->> 'id')::uuid;
  budget integer := least(greatest(coalesce(max_bytes, 4000000), 10000), 5000000);
  page_rows constant integer := 2000;
  page jsonb;
  last_answer jsonb;
  more boolean;
  result jsonb;
begin
  if not exists (select from public.users u where u.id = uid) then
    raise sqlstate 'PT404' using message = 'no such account';
  end if;
  if answers_after is not null and (after_at is null or after_id is null) then
    raise sqlstate 'PT400' using message = 'the answers cursor needs created_at and id';
  end if;
  -- A page looks at no more than `page_rows` answers of each table past the cursor (their index order), so a page
  -- costs the same however many answers the account has.
  with answers as (
    (select r.created_at, r.id, to_jsonb(r) || jsonb_build_object('archived', false) as doc
     from public.responses r
     where r.user_id = uid and (after_at is null or (r.created_at, r.id) > (after_at, after_id))
     order by r.created_at, r.id limit page_rows + 1)
    union all
    (select a.created_at, a.id, to_jsonb(a) || jsonb_build_object('archived', true)
     from archive.responses a
     where a.user_id = uid and (after_at is null or (a.created_at, a.id) > (after_at, after_id))
     order by a.created_at, a.id limit page_rows + 1)
  ), sized as (
    select doc, created_at, id,
           row_number() over (order by created_at, id) as n,
           sum(octet_length(doc::text)) over (order by created_at, id) - octet_length(doc::text) as before
    from answers
  )
  select coalesce(jsonb_agg(doc order by created_at, id) filter (where before < budget and n <= page_rows), '[]'),
         bool_or(before >= budget or n > page_rows)
  into page, more
  from sized;
  last_answer := page -> (jsonb_array_length(page) - 1);
  result := jsonb_build_object(
    'format', 'interview-prep account export, version 1',
    'user_id', uid,
    'exported_at', now(),
    'answers', page,
    'next', case when coalesce(more, false)
                 then jsonb_build_object('created_at', last_answer -> 'created_at', 'id', last_answer -> 'id') end);
  if answers_after is not null then
    return result;
  end if;
  return result || private.auth_account(uid) || jsonb_build_object(
    'user', (select to_jsonb(u) from public.users u where u.id = uid),
    'profile', (select to_jsonb(p) from public.user_profiles p where p.user_id = uid),
    'billing_customers', (select coalesce(jsonb_agg(to_jsonb(b)), '[]') from public.billing_customers b
                          where b.user_id = uid),
    'subscriptions', (select coalesce(jsonb_agg(to_jsonb(s) order by s.created_at), '[]') from public.subscriptions s
                      where s.user_id = uid),
    'subscription_changes', (select coalesce(jsonb_agg(to_jsonb(c) order by c.occurred_at), '[]')
                             from public.subscription_changes c where c.user_id = uid),
    'usage_counters', (select coalesce(jsonb_agg(to_jsonb(c) order by c.period_start, c.metric), '[]')
                       from public.usage_counters c where c.user_id = uid),
    'sessions', (select coalesce(jsonb_agg(to_jsonb(s) order by s.started_at), '[]') from public.practice_sessions s
                 where s.user_id = uid),
    'session_questions', (select coalesce(jsonb_agg(to_jsonb(q) order by q.served_at, q.position), '[]')
                          from public.session_questions q where q.user_id = uid),
    'ratings', (select coalesce(jsonb_agg(to_jsonb(r) order by r.created_at), '[]') from public.question_ratings r
                where r.user_id = uid),
    'achievements', (select coalesce(jsonb_agg(to_jsonb(a) order by a.awarded_at), '[]') from public.achievements a
                     where a.user_id = uid),
    'progress', (select coalesce(jsonb_agg(to_jsonb(p) order by p.period_start, p.metric_name), '[]')
                 from public.user_progress p where p.user_id = uid),
    'progress_totals', (select to_jsonb(t) from public.progress_totals t where t.user_id = uid),
    'ai_usage', (select coalesce(jsonb_agg(to_jsonb(a) order by a.created_at), '[]') from public.ai_usage a
                 where a.user_id = uid),
    'provisional_questions', (select coalesce(jsonb_agg(jsonb_build_object('id', q.id, 'content', q.content,
                                                                           'category', q.category,
                                                                           'created_at', q.created_at)), '[]')
                              from public.questions q where q.provisional_for = uid),
    'recordings', (select coalesce(jsonb_agg(jsonb_build_object('name', o.name, 'created_at', o.created_at,
                                                                'size', o.metadata -> 'size',
                                                                'mimetype', o.metadata -> 'mimetype')
                                             order by o.name), '[]')
                   from storage.objects o
                   where o.bucket_id = 'answers' and o.name like uid::text || '/%'),
    'deletion', private.account_deletion_state(uid) - 'subscriptions' - 'customers');
end
$$;

revoke all on function service.find_account(text), service.request_account_deletion(uuid, text, text),
  service.record_account_deletion_step(uuid, text, text), service.purge_account_answers(uuid, integer),
  service.complete_account_deletion(uuid),
  service.due_account_deletions(integer), service.export_account(uuid, jsonb, integer)
  from public, anon, authenticated;
grant execute on function service.find_account(text), service.request_account_deletion(uuid, text, text),
  service.record_account_deletion_step(uuid, text, text), service.purge_account_answers(uuid, integer),
  service.complete_account_deletion(uuid),
  service.due_account_deletions(integer), service.export_account(uuid, jsonb, integer)
  to service_role;
