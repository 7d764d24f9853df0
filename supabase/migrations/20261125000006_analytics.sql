-- 6. Analytics
--
-- Per-user: achievements and progress metrics, computed by the scheduled aggregation and read by the user.
-- Platform-wide: daily metrics and the AI usage log, read only by admins (app_metadata.role = 'admin',
-- which only the service can set; user_metadata is user-writable and never trusted).

create table public.achievements (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  achievement_type text not null check (achievement_type ~ '^[a-z][a-z0-9_]*$'),
  metadata jsonb not null default '{}' check (jsonb_typeof(metadata) = 'object'),
  awarded_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (user_id, achievement_type)
);

create table public.user_progress (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  metric_name text not null check (metric_name ~ '^[a-z][a-z0-9_.]*$'),
  period text not null check (period in ('day', 'week', 'month', 'all_time')),
  period_start date not null,
  metric_value numeric not null,
  details jsonb not null default '{}' check (jsonb_typeof(details) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (user_id, metric_name, period, period_start)
);

create table public.analytics_daily (
  id uuid primary key default gen_random_uuid(),
  metric_date date not null,
  metric_name text not null check (metric_name ~ '^[a-z][a-z0-9_.]*$'),
  metric_value numeric not null,
  details jsonb not null default '{}' check (jsonb_typeof(details) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (metric_date, metric_name)
);
create index idx_analytics_daily_name_date on public.analytics_daily (metric_name, metric_date);

-- Every AI call: what it cost and how long it took. Kept (anonymised) when its user is deleted, so platform
-- cost figures do not change retroactively.
create table public.ai_usage (
  id uuid primary key default gen_random_uuid(),
  user_id uuid references public.users (id) on delete set null,
  purpose text not null check (purpose in ('question_generation', 'evaluation', 'transcription')),
  model text not null,
  prompt_tokens integer not null default 0 check (prompt_tokens >= 0),
  completion_tokens integer not null default 0 check (completion_tokens >= 0),
  audio_seconds numeric check (audio_seconds >= 0),
  cost_usd numeric(12, 6) not null default 0 check (cost_usd >= 0),
  latency_ms integer not null check (latency_ms >= 0),
  succeeded boolean not null,
  error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index idx_ai_usage_created_at on public.ai_usage (created_at);
create index idx_ai_usage_user on public.ai_usage (user_id);

create trigger set_updated_at before update on public.achievements
  for each row execute function private.set_updated_at();
create trigger set_updated_at before update on public.user_progress
  for each row execute function private.set_updated_at();
create trigger set_updated_at before update on public.analytics_daily
  for each row execute function private.set_updated_at();
create trigger set_updated_at before update on public.ai_usage
  for each row execute function private.set_updated_at();

alter table public.achievements enable row level security;
alter table public.user_progress enable row level security;
alter table public.analytics_daily enable row level security;
alter table public.ai_usage enable row level security;

revoke all on public.achievements, public.user_progress, public.analytics_daily, public.ai_usage
  from anon, authenticated;
grant select on public.achievements, public.user_progress, public.analytics_daily, public.ai_usage
  to authenticated;
grant all on public.achievements, public.user_progress, public.analytics_daily, public.ai_usage
  to service_role;

create policy "achievements: read own" on public.achievements
  for select to authenticated using (user_id = (select auth.uid()));
create policy "user_progress: read own" on public.user_progress
  for select to authenticated using (user_id = (select auth.uid()));
create policy "analytics_daily: admins read" on public.analytics_daily
  for select to authenticated using (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin');
create policy "ai_usage: admins read" on public.ai_usage
  for select to authenticated using (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin');

alter publication supabase_realtime add table public.achievements, public.user_progress;
