-- 3. Subscription system
--
-- Stripe is the source of truth for billing; these tables are the platform's copy of it, written only by
-- service_role (the Stripe webhook and resync). Users read their own billing state; nobody but the service
-- writes it. Every status or plan change is kept in subscription_changes.

create type public.billing_interval as enum ('week', 'month');

-- Stripe's subscription statuses, all of them.
create type public.subscription_status as enum (
  'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'canceled', 'unpaid', 'paused'
);

create table public.plans (
  id uuid primary key default gen_random_uuid(),
  code text not null unique check (code ~ '^[a-z][a-z0-9_]*$'),
  name text not null,
  description text not null default '',
  price_cents integer not null check (price_cents >= 0),
  currency text not null default 'usd' check (currency ~ '^[a-z]{3}$'),
  billing_interval public.billing_interval,
  stripe_price_id text unique,
  trial_days integer not null default 0 check (trial_days between 0 and 30),
  past_due_grace_days integer not null default 3 check (past_due_grace_days between 0 and 30),
  -- What the plan unlocks, e.g. {"voice_answers": true}.
  features jsonb not null default '{}' check (jsonb_typeof(features) = 'object'),
  -- Per-day limits by metric name, e.g. {"practice_sessions": 20}; a missing metric means not allowed.
  usage_limits jsonb not null default '{}' check (jsonb_typeof(usage_limits) = 'object'),
  is_active boolean not null default true,
  sort_order integer not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check ((price_cents = 0) = (billing_interval is null))
);
comment on table public.plans is 'Catalogue of plans. The free plan applies to everyone without a paid subscription.';

-- The platform's catalogue; Stripe price ids differ per Stripe account and are set per environment.
insert into public.plans
  (code, name, description, price_cents, billing_interval, trial_days, features, usage_limits, sort_order)
values
  ('free', 'Free', 'Try the platform: a few questions and evaluations a day.', 0, null, 0,
   '{"voice_answers": false, "mock_interviews": false, "ai_generated_questions": false}',
   '{"practice_sessions": 2, "question_requests": 5, "evaluations": 5}', 0),
  ('weekly', 'Weekly', 'Full access, billed weekly.', 900, 'week', 7,
   '{"voice_answers": true, "mock_interviews": true, "ai_generated_questions": true}',
   '{"practice_sessions": 20, "question_requests": 100, "evaluations": 100}', 1),
  ('monthly', 'Monthly', 'Full access, billed monthly.', 2900, 'month', 7,
   '{"voice_answers": true, "mock_interviews": true, "ai_generated_questions": true}',
   '{"practice_sessions": 20, "question_requests": 100, "evaluations": 100}', 2);

-- One Stripe customer per user, created once at the first checkout.
create table public.billing_customers (
  user_id uuid primary key references public.users (id) on delete cascade,
  stripe_customer_id text not null unique,
  deleted_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table public.subscriptions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  plan_id uuid not null references public.plans (id),
  status public.subscription_status not null,
  stripe_customer_id text not null,
  stripe_subscription_id text not null unique,
  stripe_price_id text,
  trial_start timestamptz,
  trial_end timestamptz,
  current_period_start timestamptz,
  current_period_end timestamptz,
  cancel_at_period_end boolean not null default false,
  canceled_at timestamptz,
  ended_at timestamptz,
  -- The Stripe event last applied: an older event never overwrites what a newer one wrote.
  last_event_id text,
  last_event_created_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.subscriptions is 'One row per Stripe subscription; at most one live per user.';

create unique index subscriptions_one_live_per_user on public.subscriptions (user_id)
  where status in ('trialing', 'active', 'past_due', 'unpaid', 'paused');
create index idx_subscriptions_user on public.subscriptions (user_id);
create index idx_subscriptions_plan on public.subscriptions (plan_id);
create index idx_subscriptions_customer on public.subscriptions (stripe_customer_id);

-- Audit trail: every status or plan change and the Stripe event that caused it.
create table public.subscription_changes (
  id uuid primary key default gen_random_uuid(),
  subscription_id uuid not null references public.subscriptions (id) on delete cascade,
  user_id uuid not null references public.users (id) on delete cascade,
  stripe_event_id text,
  stripe_event_type text,
  old_status public.subscription_status,
  new_status public.subscription_status not null,
  old_plan_id uuid references public.plans (id),
  new_plan_id uuid not null references public.plans (id),
  occurred_at timestamptz not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index idx_subscription_changes_subscription on public.subscription_changes (subscription_id, occurred_at);
create index idx_subscription_changes_user on public.subscription_changes (user_id);
create index idx_subscription_changes_old_plan on public.subscription_changes (old_plan_id);
create index idx_subscription_changes_new_plan on public.subscription_changes (new_plan_id);

-- Every Stripe event id seen, stored in the same transaction as its effects: a redelivery finds it here.
create table private.stripe_events (
  id text primary key,
  type text not null,
  stripe_created_at timestamptz not null,
  livemode boolean not null,
  outcome text not null check (outcome in ('applied', 'ignored', 'stale')),
  payload jsonb not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index idx_stripe_events_created_at on private.stripe_events (created_at);
grant select, insert, update, delete on private.stripe_events to service_role;

-- What a user consumed per UTC day, checked and counted against the plan's usage_limits.
create table public.usage_counters (
  user_id uuid not null references public.users (id) on delete cascade,
  metric text not null check (metric ~ '^[a-z][a-z_]*$'),
  period_start date not null,
  used integer not null default 0 check (used >= 0),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (user_id, metric, period_start)
);

-- Deleting a user whose subscription Stripe still charges would keep billing someone who no longer exists
-- here (the rows go with the user, the Stripe subscription does not): refused until it is canceled, or set
-- to end with its period.
create function private.refuse_deleting_billed_users() returns trigger
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
revoke all on function private.refuse_deleting_billed_users() from public, anon, authenticated;

create trigger refuse_deleting_billed_users before delete on public.users
  for each row execute function private.refuse_deleting_billed_users();

create trigger set_updated_at before update on public.plans
  for each row execute function private.set_updated_at();
create trigger set_updated_at before update on public.billing_customers
  for each row execute function private.set_updated_at();
create trigger set_updated_at before update on public.subscriptions
  for each row execute function private.set_updated_at();
create trigger set_updated_at before update on public.subscription_changes
  for each row execute function private.set_updated_at();
create trigger set_updated_at before update on private.stripe_events
  for each row execute function private.set_updated_at();
create trigger set_updated_at before update on public.usage_counters
  for each row execute function private.set_updated_at();

-- Access: plans are public (the pricing page is shown before sign-in); the rest is read-own, service-written.
alter table public.plans enable row level security;
alter table public.billing_customers enable row level security;
alter table public.subscriptions enable row level security;
alter table public.subscription_changes enable row level security;
alter table public.usage_counters enable row level security;
alter table private.stripe_events enable row level security;

revoke all on public.plans, public.billing_customers, public.subscriptions, public.subscription_changes,
  public.usage_counters from anon, authenticated;
grant select on public.plans to anon, authenticated;
grant select on public.billing_customers, public.subscriptions, public.subscription_changes,
  public.usage_counters to authenticated;
grant all on public.plans, public.billing_customers, public.subscriptions, public.subscription_changes,
  public.usage_counters to service_role;

-- A retired plan stays readable to the users still subscribed to it.
create policy "plans: visitors read active plans" on public.plans
  for select to anon using (is_active);
create policy "plans: users read active plans and their own" on public.plans
  for select to authenticated using (
    is_active
    or exists (
      select from public.subscriptions s where s.plan_id = plans.id and s.user_id = (select auth.uid())
    )
  );
create policy "billing_customers: read own" on public.billing_customers
  for select to authenticated using (user_id = (select auth.uid()));
create policy "subscriptions: read own" on public.subscriptions
  for select to authenticated using (user_id = (select auth.uid()));
create policy "subscription_changes: read own" on public.subscription_changes
  for select to authenticated using (user_id = (select auth.uid()));
create policy "usage_counters: read own" on public.usage_counters
  for select to authenticated using (user_id = (select auth.uid()));
