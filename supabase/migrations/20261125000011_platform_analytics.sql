-- 11. Platform analytics
--
-- cron -> analytics Lambda (or `prep analytics aggregate`) -> service.aggregate_platform_day(day) ->
-- analytics_daily. Every metric of a UTC day is recomputed from the source tables and upserted, so running a
-- day again gives the same rows (and writes nothing when nothing changed), and late data is picked up by
-- re-aggregating a trailing window of days.

-- The day-range scans behind the metrics. Those of answers and sessions also carry the user's bucket
-- (uuid_hash(user_id) & 63), by which the per-user aggregation (12.) splits users into shards: a shard then
-- fetches only its own rows (with two shards, 0.3 s less a shard of a busy day), and the planner learns from
-- the indexes' statistics how many rows that keeps (without them it guessed 0.5%, and sorted a busy day's
-- 600k answers instead of hashing them).
create index idx_users_created_at on public.users (created_at);
create index idx_responses_created_at_bucket on public.responses (created_at, (uuid_hash(user_id) & 63));
-- With created_at beside it, answers scored on a day but given earlier are found in the index alone.
create index idx_responses_evaluated_at on public.responses (evaluated_at, created_at) where evaluated_at is not null;
create index idx_session_questions_served_at on public.session_questions (served_at);
create index idx_practice_sessions_ended_at_bucket on public.practice_sessions (ended_at, (uuid_hash(user_id) & 63))
  where ended_at is not null;
create index idx_subscription_changes_occurred_at on public.subscription_changes (occurred_at);

-- Monthly recurring revenue of a plan price, in dollars: weekly plans count 52/12 weeks a month.
create function private.monthly_revenue(price_cents integer, billing_interval public.billing_interval)
returns numeric
language sql immutable
set search_path = ''
as $$
  select case billing_interval when 'week' then price_cents * 52 / 12.0 when 'month' then price_cents end / 100.0
$$;

create function service.aggregate_platform_day(day date) returns jsonb
language plpgsql
set search_path = ''
-- A busy day's distinct users (a million answers) are counted in memory instead of spilling to disk.
set work_mem = '64MB'
as $$
declare
  day_start timestamptz := day::timestamp at time zone 'utc';
  day_end timestamptz := (day + 1)::timestamp at time zone 'utc';
  written integer;
  computed integer;
begin
  create temporary table metrics (name text primary key, value numeric not null, details jsonb not null)
    on commit drop;

  insert into metrics
  with scored_by_category as (
    select r.category, count(*) as evaluations, count(r.ai_score) as scored, sum(r.ai_score) as score_sum
    from public.responses r
    where r.evaluated_at >= day_start and r.evaluated_at < day_end and r.evaluation_status = 'completed'
    group by r.category
  ), answers_by_user as (  -- the day's answers are scanned once, for two metrics
    select r.user_id, count(*) as answers
    from public.responses r where r.created_at >= day_start and r.created_at < day_end
    group by r.user_id
  ), served as (  -- likewise the day's served questions
    select count(*) as questions, count(*) filter (where sq.widening is distinct from 'generated') as from_bank
    from public.session_questions sq where sq.served_at >= day_start and sq.served_at < day_end
  )
  -- People
  select 'signups', count(*), '{}'::jsonb from public.users u where u.created_at >= day_start and u.created_at < day_end
  union all
  select 'active_users.daily', count(*), '{}'::jsonb from (
    select s.user_id from public.practice_sessions s where s.started_at >= day_start and s.started_at < day_end
    union
    select a.user_id from answers_by_user a
  ) a
  -- Weekly and monthly activity by sessions started: answers need a session, so this counts the same people
  -- while scanning a tenth of the rows.
  union all
  select 'active_users.weekly', count(distinct s.user_id), '{}'::jsonb from public.practice_sessions s
  where s.started_at >= day_end - interval '7 days' and s.started_at < day_end
  union all
  select 'active_users.monthly', count(distinct s.user_id), '{}'::jsonb from public.practice_sessions s
  where s.started_at >= day_end - interval '30 days' and s.started_at < day_end
  -- Practice
  union all
  select 'sessions.started', count(*), coalesce(jsonb_object_agg(t.session_type, t.n), '{}')
  from (select s.session_type, count(*) as n from public.practice_sessions s
        where s.started_at >= day_start and s.started_at < day_end group by 1) t
  union all
  select 'sessions.completed', coalesce(sum(t.n), 0), coalesce(jsonb_object_agg(t.session_type, t.n), '{}')
  from (select s.session_type, count(*) as n from public.practice_sessions s
        where s.ended_at >= day_start and s.ended_at < day_end and s.status = 'completed' group by 1) t
  union all
  select 'responses', coalesce(sum(a.answers), 0), '{}'::jsonb from answers_by_user a
  union all
  select 'evaluations', coalesce(sum(c.evaluations), 0), '{}'::jsonb from scored_by_category c
  union all
  -- A day with nothing scored has no average (not an average of 0).
  select 'average_score', round(sum(c.score_sum) / sum(c.scored), 2),
         jsonb_object_agg(c.category, round(c.score_sum / c.scored, 2))
  from scored_by_category c
  where c.scored > 0
  having count(*) > 0
  -- Questions and AI
  union all
  select 'questions.served', q.questions,
         jsonb_build_object('from_bank', q.from_bank, 'generated', q.questions - q.from_bank)
  from served q
  union all
  select 'questions.cache_hit_ratio', coalesce(round(q.from_bank::numeric / nullif(q.questions, 0), 4), 1), '{}'::jsonb
  from served q
  union all
  select 'ai.calls', count(*), coalesce((select jsonb_object_agg(p.purpose, p.n) from (
      select u2.purpose, count(*) as n from public.ai_usage u2
      where u2.created_at >= day_start and u2.created_at < day_end group by 1) p), '{}')
  from public.ai_usage u where u.created_at >= day_start and u.created_at < day_end
  union all
  select 'ai.cost_usd', coalesce(sum(u.cost_usd), 0), coalesce((select jsonb_object_agg(p.purpose, p.cost) from (
      select u2.purpose, sum(u2.cost_usd) as cost from public.ai_usage u2
      where u2.created_at >= day_start and u2.created_at < day_end group by 1) p), '{}')
  from public.ai_usage u where u.created_at >= day_start and u.created_at < day_end;

  -- What the bank saved: each question served from it is one the model did not have to write, priced at what
  -- generating a question cost over the last 30 days.
  insert into metrics
  select 'ai.cost_saved_by_cache_usd',
         round((select (m.details ->> 'from_bank')::numeric from metrics m where m.name = 'questions.served')
               * coalesce(g.cost / nullif(g.questions, 0), 0), 6),
         jsonb_build_object('cost_per_generated_question', round(coalesce(g.cost / nullif(g.questions, 0), 0), 6))
  from (
    select (select sum(u.cost_usd) from public.ai_usage u
            where u.purpose = 'question_generation' and u.created_at >= day_end - interval '30 days'
              and u.created_at < day_end) as cost,
           (select count(*) from public.questions q
            where q.source = 'ai' and q.created_at >= day_end - interval '30 days' and q.created_at < day_end)
             as questions
  ) g;

  -- Billing, as it stood at the end of the day: each subscription's last change up to then.
  insert into metrics
  with state as (
    select distinct on (c.subscription_id) c.subscription_id, c.new_status as status, c.new_plan_id as plan_id
    from public.subscription_changes c
    where c.occurred_at < day_end
    order by c.subscription_id, c.occurred_at desc, c.created_at desc
  ), day_changes as (
    select c.old_status, c.new_status from public.subscription_changes c
    where c.occurred_at >= day_start and c.occurred_at < day_end
  )
  select 'subscriptions.active', coalesce(sum(b.n), 0), coalesce(jsonb_object_agg(b.code, b.n), '{}')
  from (select p.code, count(*) as n from state s join public.plans p on p.id = s.plan_id
        where s.status in ('trialing', 'active', 'past_due') group by p.code) b
  union all
  select 'mrr_usd', coalesce(sum(private.monthly_revenue(p.price_cents, p.billing_interval))
                               filter (where s.status in ('active', 'past_due')), 0), '{}'::jsonb
  from state s join public.plans p on p.id = s.plan_id
  union all
  select 'subscriptions.past_due', count(*) filter (where s.status = 'past_due'), '{}'::jsonb from state s
  union all
  select 'trials.started', count(*) filter (where d.old_status is null and d.new_status = 'trialing'), '{}'::jsonb
  from day_changes d
  union all
  select 'trials.converted', count(*) filter (where d.old_status = 'trialing' and d.new_status = 'active'), '{}'::jsonb
  from day_changes d
  union all
  select 'subscriptions.churned', count(*) filter (where d.new_status = 'canceled' and d.old_status <> 'canceled'),
         '{}'::jsonb
  from day_changes d;

  select count(*) into computed from metrics;
  insert into public.analytics_daily as a (metric_date, metric_name, metric_value, details)
  select day, m.name, m.value, m.details from metrics m
  on conflict (metric_date, metric_name) do update
    set metric_value = excluded.metric_value, details = excluded.details
    where (a.metric_value, a.details) is distinct from (excluded.metric_value, excluded.details);
  get diagnostics written = row_count;
  drop table metrics;
  return jsonb_build_object('day', day, 'metrics', computed, 'changed', written);
end
$$;

revoke all on function private.monthly_revenue(integer, public.billing_interval), service.aggregate_platform_day(date)
  from public, anon, authenticated;
grant execute on function private.monthly_revenue(integer, public.billing_interval), service.aggregate_platform_day(date)
  to service_role;
