-- 12. Per-user progress, achievements and maintenance
--
-- cron -> analytics Lambda (or `prep analytics aggregate`) -> service.aggregate_user_day(day) -> user_progress,
-- achievements; service.run_maintenance() -> housekeeping. Like the platform metrics (11.), a UTC day's figures
-- are recomputed from the source tables, so running a day again gives the same rows (and writes nothing when
-- nothing changed), and re-running a trailing window picks up late data (answers scored after the day, say).
--
-- A user's progress is one `practice` row per period: metric_value is the questions answered, details the rest
-- (JSONB for the complex figures, as the design intends). One row per user and period keeps a day with 100k
-- active users to 200k row writes, and gives clients everything in one read (and one realtime event).
--   period 'day', period_start = the user's local date (their profile's timezone; UTC without one):
--     {sessions_completed, by_type: {type: n}, scored, score_sum, best,
--      by_category: {category: {answers, score_sum}}}   -- scored answers only in by_category
--   period 'all_time', period_start = 1970-01-01:
--     {sessions_completed, by_type, scored, score_sum, average_score, best_score,
--      by_category: {category: {answers, score_sum, average}},
--      weakest_categories: [{category, average, answers}]  -- weakest first, categories with >= 3 scored
--                                                          -- answers: what the question engine can recommend
--      streak: {current, longest, last_active_day}        -- consecutive local days with practice; current
--                                                          -- counts up to today or yesterday
--      score_trend: {slope, scores}}                      -- points per session over the last 10 scored
--                                                          -- sessions, scores oldest first
-- An answer counts on the local day it was given, whenever it was scored; a session on the day it ended.

create function private.local_day(at timestamptz, timezone text) returns date
language sql immutable
set search_path = ''
as $$ select (at at time zone timezone)::date $$;

-- The lookups behind the per-user figures: a user's sessions by end, the practice days of a user.
create index idx_practice_sessions_user_ended on public.practice_sessions (user_id, ended_at)
  where status = 'completed';
create index idx_user_progress_live_streaks on public.user_progress (user_id)
  where period = 'all_time' and (details -> 'streak' ->> 'current')::integer > 0;

-- The catalog: what can be earned, in display order. Readable by everyone (it is the product's copy);
-- every awarded achievement is one of these.
create table public.achievement_catalog (
  achievement_type text primary key check (achievement_type ~ '^[a-z][a-z0-9_]*$'),
  title text not null,
  description text not null,
  display_order integer not null unique,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create trigger set_updated_at before update on public.achievement_catalog
  for each row execute function private.set_updated_at();
alter table public.achievement_catalog enable row level security;
revoke all on public.achievement_catalog from anon, authenticated;
grant select on public.achievement_catalog to anon, authenticated;
grant all on public.achievement_catalog to service_role;
create policy "achievement_catalog: everyone reads" on public.achievement_catalog
  for select to anon, authenticated using (true);

insert into public.achievement_catalog (achievement_type, title, description, display_order) values
  ('first_session', 'First steps', 'Completed your first practice session.', 10),
  ('sessions_10', 'Regular', 'Completed 10 practice sessions.', 20),
  ('sessions_50', 'Dedicated', 'Completed 50 practice sessions.', 30),
  ('answers_100', 'Hundred answers', 'Answered 100 questions.', 40),
  ('streak_3', 'Three in a row', 'Practised 3 days in a row.', 50),
  ('streak_7', 'A full week', 'Practised 7 days in a row.', 60),
  ('streak_30', 'Habit formed', 'Practised 30 days in a row.', 70),
  ('perfect_score', 'Flawless', 'An answer scored 100.', 80),
  ('all_categories', 'Well rounded', 'Had answers scored in every category.', 90),
  ('first_mock_interview', 'Dress rehearsal', 'Completed your first mock interview.', 100),
  ('improvement', 'On the rise', 'Your last 5 scored sessions average 10 points above the 5 before them.', 110);

alter table public.achievements
  add foreign key (achievement_type) references public.achievement_catalog (achievement_type);
create index idx_achievements_type on public.achievements (achievement_type);

-- Recompute the progress of everyone whose practice a UTC day touched, and award what they earned.
-- `as_of` is when "today" is for current streaks (the run's time by default).
create function service.aggregate_user_day(day date, as_of timestamptz default now()) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  day_start timestamptz := day::timestamp at time zone 'utc';
  day_end timestamptz := (day + 1)::timestamp at time zone 'utc';
  written integer;
  changed integer := 0;
  awarded integer;
  streaks_ended integer;
  people integer;
  recomputed integer;
  first_start timestamptz;
  last_end timestamptz;
begin
  -- One run at a time: overlapping runs would recompute the same users' all-time rows in different orders.
  perform pg_advisory_xact_lock(hashtext('service.aggregate_user_day'));

  -- (user, local day) pairs the UTC day changed: the local days from the user's first to last touched moment
  -- (answers given, answers scored -- on the day they were given -- and sessions completed), with each local
  -- day's bounds in UTC, so the source rows are found by plain range scans.
  create temporary table touched_days on commit drop as
  with touched as (
    select a.user_id, min(a.at) as first_at, max(a.at) as last_at
    from (
      select r.user_id, r.created_at as at from public.responses r
      where r.created_at >= day_start and r.created_at < day_end
      union all
      select r.user_id, r.created_at from public.responses r
      where r.evaluated_at >= day_start and r.evaluated_at < day_end and r.created_at < day_start
      union all
      select s.user_id, s.ended_at from public.practice_sessions s
      where s.ended_at >= day_start and s.ended_at < day_end and s.status = 'completed'
    ) a
    group by a.user_id
  )
  select t.user_id, z.timezone, d.local_day,
         d.local_day::timestamp at time zone z.timezone as local_start,
         (d.local_day + 1)::timestamp at time zone z.timezone as local_end
  from touched t
  left join public.user_profiles p on p.user_id = t.user_id
  cross join lateral (select coalesce(p.timezone, 'UTC') as timezone) z
  cross join lateral generate_series(private.local_day(t.first_at, z.timezone),
                                     private.local_day(t.last_at, z.timezone), interval '1 day') g (day)
  cross join lateral (select g.day::date as local_day) d;
  analyze touched_days;

  create temporary table progress (user_id uuid, period text, period_start date, value numeric, details jsonb)
    on commit drop;

  -- Day rows, recomputed whole for each touched local day: one range scan over the answers of those days,
  -- kept (and analyzed) so the join to the served questions is planned for its real size.
  select min(t.local_start), max(t.local_end) into first_start, last_end from touched_days t;
  create temporary table day_answers on commit drop as
  select t.user_id, t.local_day, r.session_question_id, r.ai_score
  from public.responses r
  join touched_days t on t.user_id = r.user_id and r.created_at >= t.local_start and r.created_at < t.local_end
  where r.created_at >= first_start and r.created_at < last_end;
  analyze day_answers;

  with by_category as (
    select a.user_id, a.local_day, q.category, count(*) as answers, count(a.ai_score) as scored,
           sum(a.ai_score) as score_sum, max(a.ai_score) as best
    from day_answers a
    join public.session_questions sq on sq.id = a.session_question_id
    join public.questions q on q.id = sq.question_id
    group by 1, 2, 3
  ), answers as (
    select c.user_id, c.local_day, sum(c.answers) as answers, sum(c.scored) as scored,
           sum(c.score_sum) as score_sum, max(c.best) as best,
           coalesce(jsonb_object_agg(c.category, jsonb_build_object('answers', c.scored, 'score_sum', c.score_sum))
                      filter (where c.scored > 0), '{}') as by_category
    from by_category c group by 1, 2
  ), sessions as (
    select t.user_id, t.local_day, sum(n.sessions) as sessions, jsonb_object_agg(n.session_type, n.sessions) as by_type
    from touched_days t
    cross join lateral (
      select s.session_type, count(*) as sessions from public.practice_sessions s
      where s.user_id = t.user_id and s.status = 'completed' and s.ended_at >= t.local_start and s.ended_at < t.local_end
      group by s.session_type
    ) n
    group by 1, 2
  )
  insert into progress
  select coalesce(a.user_id, n.user_id), 'day', coalesce(a.local_day, n.local_day), coalesce(a.answers, 0),
         jsonb_build_object('sessions_completed', coalesce(n.sessions, 0), 'by_type', coalesce(n.by_type, '{}'),
                            'scored', coalesce(a.scored, 0), 'score_sum', coalesce(a.score_sum, 0),
                            'best', a.best, 'by_category', coalesce(a.by_category, '{}'))
  from answers a
  full join sessions n on n.user_id = a.user_id and n.local_day = a.local_day
  order by 1, 3;
  analyze progress;  -- temporary tables have no statistics of their own: joins to them are planned blind

  -- The day rows about to be replaced: the all-time rows are corrected by the difference (below).
  create temporary table replaced_days on commit drop as
  select d.user_id, d.period_start as local_day, d.metric_value as answers, d.details
  from progress p
  join public.user_progress d on d.user_id = p.user_id and d.metric_name = 'practice' and d.period = 'day'
    and d.period_start = p.period_start;
  analyze replaced_days;

  insert into public.user_progress as up (user_id, metric_name, period, period_start, metric_value, details)
  select p.user_id, 'practice', p.period, p.period_start, p.value, p.details from progress p
  on conflict (user_id, metric_name, period, period_start) do update
    set metric_value = excluded.metric_value, details = excluded.details
    where (up.metric_value, up.details) is distinct from (excluded.metric_value, excluded.details);
  get diagnostics written = row_count;
  changed := changed + written;

  -- All-time rows of the users whose days changed (or who have none yet): the stored sums plus what the
  -- recomputed days changed (new day rows minus the ones they replaced), so a run costs what the window
  -- changed, not each user's whole history; a re-run with nothing new recomputes no all-time row. A user
  -- without an all-time row yet starts from all their day rows. (Current streaks that lapse without new
  -- practice are ended below, for everyone.)
  select count(distinct t.user_id) into people from touched_days t;
  create temporary table touched_users on commit drop as
  with changed as (
    select p.user_id from progress p
    left join replaced_days r on r.user_id = p.user_id and r.local_day = p.period_start
    where r.user_id is null or (r.answers, r.details) is distinct from (p.value, p.details)
  ), users as (
    select distinct t.user_id, t.timezone from touched_days t
  )
  select u.user_id, u.timezone, private.local_day(as_of, u.timezone) as today, a.metric_value as answers, a.details
  from users u
  left join public.user_progress a on a.user_id = u.user_id and a.metric_name = 'practice'
    and a.period = 'all_time' and a.period_start = date '1970-01-01'
  where a.user_id is null or u.user_id in (select c.user_id from changed c);
  analyze touched_users;
  select count(*) into recomputed from touched_users;

  create temporary table all_time_rows on commit drop as
  with changes as (
    select p.user_id, p.value as answers, p.details, 1 as sign
    from touched_users u join progress p on p.user_id = u.user_id
    where u.details is not null
    union all
    select r.user_id, -r.answers, r.details, -1
    from touched_users u join replaced_days r on r.user_id = u.user_id
    where u.details is not null
    union all
    select d.user_id, d.metric_value, d.details, 1
    from touched_users u
    join public.user_progress d on d.user_id = u.user_id and d.metric_name = 'practice' and d.period = 'day'
    where u.details is null
  ), totals as (
    select u.user_id, u.today,
           coalesce(u.answers, 0) + coalesce(sum(c.answers), 0) as answers,
           coalesce((u.details ->> 'sessions_completed')::integer, 0)
             + coalesce(sum(c.sign * (c.details ->> 'sessions_completed')::integer), 0) as sessions,
           coalesce((u.details ->> 'scored')::integer, 0)
             + coalesce(sum(c.sign * (c.details ->> 'scored')::integer), 0) as scored,
           coalesce((u.details ->> 'score_sum')::numeric, 0)
             + coalesce(sum(c.sign * (c.details ->> 'score_sum')::numeric), 0) as score_sum,
           -- A personal best: the highest score any recomputed day holds, or the one stored.
           greatest((u.details ->> 'best_score')::numeric,
                    max((c.details ->> 'best')::numeric) filter (where c.sign = 1)) as best
    from touched_users u
    left join changes c on c.user_id = u.user_id
    group by u.user_id, u.today, u.answers, u.details
  ), session_types as (
    select t.user_id, jsonb_object_agg(t.session_type, t.sessions) filter (where t.sessions > 0) as by_type
    from (select x.user_id, x.session_type, sum(x.sessions) as sessions
          from (select u.user_id, k.key as session_type, k.value::integer as sessions
                from touched_users u, jsonb_each_text(u.details -> 'by_type') k
                union all
                select c.user_id, k.key, c.sign * k.value::integer
                from changes c, jsonb_each_text(c.details -> 'by_type') k) x
          group by 1, 2) t
    group by t.user_id
  ), categories as (
    select x.user_id, x.category, sum(x.answers) as answers, sum(x.score_sum) as score_sum
    from (select u.user_id, k.key as category, (k.value ->> 'answers')::integer as answers,
                 (k.value ->> 'score_sum')::numeric as score_sum
          from touched_users u, jsonb_each(u.details -> 'by_category') k
          union all
          select c.user_id, k.key, c.sign * (k.value ->> 'answers')::integer,
                 c.sign * (k.value ->> 'score_sum')::numeric
          from changes c, jsonb_each(c.details -> 'by_category') k) x
    group by 1, 2
    having sum(x.answers) > 0
  ), category_lists as (
    select c.user_id,
           jsonb_object_agg(c.category, jsonb_build_object('answers', c.answers, 'score_sum', c.score_sum,
                                                           'average', round(c.score_sum / c.answers, 2)))
             as by_category,
           coalesce((jsonb_agg(jsonb_build_object('category', c.category, 'average', round(c.score_sum / c.answers, 2),
                                                  'answers', c.answers)
                               order by c.score_sum / c.answers, c.category) filter (where c.answers >= 3)), '[]')
             as weakest
    from categories c group by c.user_id
  ), active_days as (
    -- Day rows exist only for days with practice; their keys alone (an index-only read) give the streaks.
    select u.user_id, u.today, d.period_start as local_day
    from touched_users u
    join public.user_progress d on d.user_id = u.user_id and d.metric_name = 'practice' and d.period = 'day'
  ), runs as (
    -- Consecutive days share (day - its rank): one group per streak.
    select r.user_id, r.today, max(r.local_day) as last_day, count(*) as length
    from (select a.user_id, a.today, a.local_day,
                 a.local_day - (row_number() over (partition by a.user_id order by a.local_day))::integer as streak
          from active_days a) r
    group by r.user_id, r.today, r.streak
  ), streaks as (
    select r.user_id,
           jsonb_build_object('current', coalesce(max(r.length) filter (where r.last_day >= r.today - 1), 0),
                              'longest', max(r.length), 'last_active_day', max(r.last_day)) as streak
    from runs r group by r.user_id
  ), trends as (
    select u.user_id,
           jsonb_build_object('slope', coalesce(round(regr_slope(s.score, s.ordinal)::numeric, 2), 0),
                              'scores', coalesce(jsonb_agg(s.score order by s.ordinal), '[]')) as score_trend
    from touched_users u
    cross join lateral (
      select l.overall_score as score, row_number() over (order by l.started_at) as ordinal
      from (select s.overall_score, s.started_at from public.practice_sessions s
            where s.user_id = u.user_id and s.status = 'completed' and s.overall_score is not null
            order by s.started_at desc limit 10) l
    ) s
    group by u.user_id
  )
  select t.user_id, 'all_time' as period, date '1970-01-01' as period_start, t.answers as value,
         jsonb_build_object(
           'sessions_completed', t.sessions, 'by_type', coalesce(st.by_type, '{}'),
           'scored', t.scored, 'score_sum', t.score_sum, 'average_score', round(t.score_sum / nullif(t.scored, 0), 2),
           'best_score', t.best,
           'by_category', coalesce(c.by_category, '{}'), 'weakest_categories', coalesce(c.weakest, '[]'),
           'streak', coalesce(s.streak, jsonb_build_object('current', 0, 'longest', 0, 'last_active_day', null)),
           'score_trend', coalesce(tr.score_trend, jsonb_build_object('slope', 0, 'scores', '[]'::jsonb))) as details
  from totals t
  left join session_types st using (user_id)
  left join category_lists c using (user_id)
  left join streaks s using (user_id)
  left join trends tr using (user_id)
  order by 1;

  insert into public.user_progress as up (user_id, metric_name, period, period_start, metric_value, details)
  select p.user_id, 'practice', p.period, p.period_start, p.value, p.details from all_time_rows p
  on conflict (user_id, metric_name, period, period_start) do update
    set metric_value = excluded.metric_value, details = excluded.details
    where (up.metric_value, up.details) is distinct from (excluded.metric_value, excluded.details);
  get diagnostics written = row_count;
  changed := changed + written;

  -- Everyone else's current streak ends once a whole local day passes without practice.
  update public.user_progress up set details = jsonb_set(up.details, '{streak,current}', '0')
  from public.users u
  left join public.user_profiles p on p.user_id = u.id
  where up.user_id = u.id
    and up.period = 'all_time' and (up.details -> 'streak' ->> 'current')::integer > 0
    and (up.details -> 'streak' ->> 'last_active_day')::date < private.local_day(as_of, coalesce(p.timezone, 'UTC')) - 1;
  get diagnostics streaks_ended = row_count;

  -- Achievements: awarded once (the unique key), whoever runs concurrently; metadata says what earned it.
  insert into public.achievements (user_id, achievement_type, metadata)
  select p.user_id, x.achievement_type, x.metadata
  from all_time_rows p
  cross join lateral (
    select avg(s.score::numeric) filter (where s.ordinal <= 5) as previous,
           avg(s.score::numeric) filter (where s.ordinal > 5) as latest
    from jsonb_array_elements_text(p.details -> 'score_trend' -> 'scores') with ordinality as s (score, ordinal)
  ) trend
  cross join lateral (values
    ('first_session', (p.details ->> 'sessions_completed')::integer >= 1,
     jsonb_build_object('sessions_completed', p.details -> 'sessions_completed')),
    ('sessions_10', (p.details ->> 'sessions_completed')::integer >= 10,
     jsonb_build_object('sessions_completed', p.details -> 'sessions_completed')),
    ('sessions_50', (p.details ->> 'sessions_completed')::integer >= 50,
     jsonb_build_object('sessions_completed', p.details -> 'sessions_completed')),
    ('answers_100', p.value >= 100, jsonb_build_object('questions_answered', p.value)),
    ('streak_3', (p.details -> 'streak' ->> 'longest')::integer >= 3,
     jsonb_build_object('streak', p.details -> 'streak' -> 'longest')),
    ('streak_7', (p.details -> 'streak' ->> 'longest')::integer >= 7,
     jsonb_build_object('streak', p.details -> 'streak' -> 'longest')),
    ('streak_30', (p.details -> 'streak' ->> 'longest')::integer >= 30,
     jsonb_build_object('streak', p.details -> 'streak' -> 'longest')),
    ('perfect_score', (p.details ->> 'best_score')::numeric >= 100, jsonb_build_object('score', 100)),
    ('all_categories', (select count(*) from jsonb_object_keys(p.details -> 'by_category'))
                         = cardinality(enum_range(null::public.question_category)),
     jsonb_build_object('categories', p.details -> 'by_category')),
    ('first_mock_interview', (p.details -> 'by_type' ->> 'mock_interview')::integer >= 1,
     jsonb_build_object('mock_interviews', p.details -> 'by_type' -> 'mock_interview')),
    ('improvement', jsonb_array_length(p.details -> 'score_trend' -> 'scores') = 10
                      and trend.latest >= trend.previous + 10,
     jsonb_build_object('previous_average', round(trend.previous, 2), 'latest_average', round(trend.latest, 2)))
  ) x (achievement_type, earned, metadata)
  where x.earned
    -- A probe is cheaper than an insert that conflicts; the unique key still decides under concurrency.
    and not exists (select from public.achievements a
                    where a.user_id = p.user_id and a.achievement_type = x.achievement_type)
  on conflict (user_id, achievement_type) do nothing;
  get diagnostics awarded = row_count;

  drop table touched_days, day_answers, replaced_days, touched_users, all_time_rows, progress;
  return jsonb_build_object('day', day, 'users', people, 'recomputed', recomputed, 'changed', changed,
                            'streaks_ended', streaks_ended,
                            'achievements_awarded', awarded);
end
$$;

-- Archive: answers of sessions that ended before the retention period move here, out of the hot table; the
-- sessions and the served-question record stay (that record is what keeps questions from repeating). Users
-- still read their archived answers (public.response_history).
create schema archive;
grant usage on schema archive to authenticated, service_role;
create table archive.responses (like public.responses including defaults including constraints);
alter table archive.responses add primary key (id);
create index idx_archive_responses_user on archive.responses (user_id, created_at desc);
create index idx_archive_responses_session on archive.responses (session_id);
alter table archive.responses enable row level security;
grant select on archive.responses to authenticated;
grant select, insert, delete on archive.responses to service_role;
create policy "archived responses: read own" on archive.responses
  for select to authenticated using (user_id = (select auth.uid()));

-- Every answer a user gave, current or archived.
create view public.response_history with (security_invoker = true) as
select * from public.responses
union all
select * from archive.responses;
revoke all on public.response_history from anon, authenticated;
grant select on public.response_history to authenticated, service_role;

create or replace view public.session_summaries with (security_invoker = true) as
select
  s.id,
  s.user_id,
  s.session_type,
  s.status,
  s.started_at,
  s.ended_at,
  s.overall_score,
  count(sq.id) as question_count,
  count(r.id) as answered_count,
  count(r.id) filter (where r.evaluation_status = 'completed') as evaluated_count
from public.practice_sessions s
left join public.session_questions sq on sq.session_id = s.id
left join public.response_history r on r.session_question_id = sq.id
group by s.id;

-- The bank's stock per bucket, for the operator's dashboard (which buckets run thin and cost generation).
create materialized view private.question_bank_stock as
select q.category, q.difficulty, q.experience_level, count(*) as questions,
       count(*) filter (where q.source = 'ai') as generated, round(avg(q.rating_avg), 2) as average_rating
from public.questions q
group by 1, 2, 3;
create unique index question_bank_stock_bucket on private.question_bank_stock (category, difficulty, experience_level);
grant select on private.question_bank_stock to service_role;

-- Materialized views are refreshed by their owner; concurrently, so readers never wait.
create function private.refresh_materialized_views() returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  view_name text;
  refreshed integer := 0;
begin
  for view_name in
    select format('%I.%I', m.schemaname, m.matviewname) from pg_catalog.pg_matviews m
    where m.schemaname in ('public', 'private') and m.ispopulated order by 1
  loop
    execute format('refresh materialized view concurrently %s', view_name);
    refreshed := refreshed + 1;
  end loop;
  return refreshed;
end
$$;

create index idx_responses_evaluation_pending on public.responses (evaluation_requested_at)
  where evaluation_status in ('queued', 'processing');
create index idx_practice_sessions_in_progress on public.practice_sessions (started_at)
  where status = 'in_progress';

-- Housekeeping, each part idempotent. Limits in `policy` (defaults below) so backfills and tests can vary them.
create function service.run_maintenance(as_of timestamptz default now(), policy jsonb default '{}') returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  -- A session nobody touched for a day is over; a timed one once its limit has passed by an hour.
  abandon_after interval := make_interval(hours => coalesce((policy ->> 'abandon_after_hours')::integer, 24));
  -- The queue's own retries end about 65 minutes after a request (3 receives 30 minutes apart, the visibility
  -- timeout, each up to the worker's 5-minute timeout): past two hours nothing is coming.
  stuck_after interval := make_interval(mins => coalesce((policy ->> 'stuck_evaluation_minutes')::integer, 120));
  keep_responses interval := make_interval(days => coalesce((policy ->> 'response_retention_days')::integer, 365));
  archive_batch integer := coalesce((policy ->> 'archive_batch')::integer, 10000);
  keep_stripe_events interval := make_interval(days => coalesce((policy ->> 'stripe_event_retention_days')::integer, 90));
  keep_counters interval := make_interval(days => coalesce((policy ->> 'usage_counter_retention_days')::integer, 90));
  abandoned integer;
  stuck integer := 0;
  archived integer;
  purged_events integer;
  purged_counters integer;
  purged_leases integer;
  pending record;
begin
  update public.practice_sessions s set status = 'abandoned'
  where s.status = 'in_progress'
    and s.started_at < as_of - greatest(abandon_after,
                                        make_interval(secs => coalesce(s.time_limit_seconds, 0)) + interval '1 hour');
  get diagnostics abandoned = row_count;

  -- Evaluations requested long ago and still unfinished (the worker crashed past its retries, the message was
  -- lost): fail them honestly, with the quota refunded, so the user can ask again.
  for pending in
    select r.id from public.responses r
    where r.evaluation_status in ('queued', 'processing') and r.evaluation_requested_at < as_of - stuck_after
    for update skip locked
  loop
    perform service.fail_evaluation(pending.id,
      'the evaluation did not finish in time; ask for it again (it was not counted)');
    stuck := stuck + 1;
  end loop;

  with moved as (
    delete from public.responses r
    where r.id in (select r2.id from public.responses r2
                   join public.practice_sessions s on s.id = r2.session_id
                   where s.ended_at < as_of - keep_responses
                   limit archive_batch)
    returning r.*
  )
  insert into archive.responses select * from moved;
  get diagnostics archived = row_count;

  delete from private.stripe_events e where e.created_at < as_of - keep_stripe_events;
  get diagnostics purged_events = row_count;
  delete from public.usage_counters c where c.period_start < (as_of - keep_counters)::date;
  get diagnostics purged_counters = row_count;
  delete from private.generation_leases l where l.expires_at < as_of;
  get diagnostics purged_leases = row_count;

  return jsonb_build_object(
    'sessions_abandoned', abandoned, 'evaluations_failed', stuck, 'responses_archived', archived,
    'stripe_events_purged', purged_events, 'usage_counters_purged', purged_counters,
    'generation_leases_purged', purged_leases,
    'materialized_views_refreshed', private.refresh_materialized_views());
end
$$;

-- The operator dashboard's data (`prep analytics report`): each platform metric as a series over the days up to
-- `until`, a missing day as null, and the bank's thinnest buckets.
create function service.dashboard(days integer, until date) returns jsonb
language sql stable
set search_path = ''
as $$
  with calendar as (
    select d::date as day from generate_series(until - (days - 1), until, interval '1 day') d
  ), names as (
    select distinct a.metric_name from public.analytics_daily a
    where a.metric_date between until - (days - 1) and until
  )
  select jsonb_build_object(
    'days', (select jsonb_agg(c.day order by c.day) from calendar c),
    'metrics', coalesce((
      select jsonb_object_agg(n.metric_name, (
        select jsonb_agg(case when a.id is not null
                              then jsonb_build_object('value', a.metric_value, 'details', a.details) end
                         order by c.day)
        from calendar c
        left join public.analytics_daily a on a.metric_date = c.day and a.metric_name = n.metric_name))
      from names n), '{}'),
    'thinnest_buckets', coalesce((
      select jsonb_agg(to_jsonb(b) order by b.questions, b.category, b.difficulty, b.experience_level)
      from (select * from private.question_bank_stock order by questions limit 10) b), '[]')
  )
$$;

revoke all on function private.local_day(timestamptz, text), private.refresh_materialized_views(),
  service.aggregate_user_day(date, timestamptz), service.run_maintenance(timestamptz, jsonb),
  service.dashboard(integer, date)
  from public, anon, authenticated;
grant execute on function private.local_day(timestamptz, text), private.refresh_materialized_views(),
  service.aggregate_user_day(date, timestamptz), service.run_maintenance(timestamptz, jsonb),
  service.dashboard(integer, date) to service_role;
