-- 12. Per-user progress, achievements and maintenance
--
-- cron -> analytics Lambda (or `prep analytics aggregate`) -> service.aggregate_user_day(day, shard, shards)
-- -> user_progress (days), progress_totals (all time), achievements;
-- service.run_maintenance() -> housekeeping. Like the platform metrics (11.), a UTC day's figures are
-- recomputed from the source tables, so running a day again gives the same rows (and writes nothing when
-- nothing changed), and re-running a trailing window picks up late data (answers scored after the day, say).
--
-- A user's day is one `practice` row of user_progress (name-value per period, as the design intends):
--   period 'day', period_start = the user's local date (their profile's timezone; UTC without one),
--   metric_value = questions answered, details =
--     {sessions_completed, by_type: {type: n}, scored, score_sum, best,
--      by_category: {category: {answers, score_sum}}}   -- scored answers only in by_category
-- An answer counts on the local day it was given, whenever it was scored; a session on the day it ended.
--
-- All-time figures are one row per user of typed columns instead (progress_totals): every run adds to them
-- what the recomputed days changed, which in JSON meant taking each user's object apart and building it
-- again, the most expensive part of a busy day. Typed, clients also filter and sort on them through
-- PostgREST. Only the per-category figures are a small JSON object in that row, merged for the categories a
-- run touched: a row per user and category would nearly double the rows a busy day writes.

-- The score trend reads a user's last scored sessions from the index alone.
create index idx_practice_sessions_user_scored on public.practice_sessions (user_id, started_at desc)
  include (overall_score) where status = 'completed' and overall_score is not null;

-- Rewritten by the aggregation whenever their user practises: room left on each page keeps a rewrite a HOT
-- update (no index entries written), a quarter of the cost of one that moves the row.
create table public.progress_totals (
  user_id uuid primary key references public.users (id) on delete cascade,
  questions_answered integer not null default 0,
  sessions_completed integer not null default 0,
  mock_interviews integer not null default 0,
  scored_answers integer not null default 0,
  score_sum numeric not null default 0,
  average_score numeric generated always as (round(score_sum / nullif(scored_answers, 0), 2)) stored,
  best_score numeric,
  -- {category: {scored_answers, score_sum, average_score}}, a category once it has a scored answer.
  categories jsonb not null default '{}' check (jsonb_typeof(categories) = 'object'),
  -- Runs of consecutive local days with practice: latest_run ends on last_active_day (the current streak
  -- depends on today: public.user_streaks).
  latest_run integer not null default 0,
  longest_streak integer not null default 0,
  last_active_day date,
  -- The last 10 scored sessions' scores, oldest first; the least-squares slope through them (points per
  -- session); improvement: the last 5 averaged against the 5 before them, once there are 10.
  recent_scores numeric[] not null default '{}',
  trend_slope numeric not null default 0,
  improvement numeric,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
) with (fillfactor = 50);

create trigger set_updated_at before update on public.progress_totals
  for each row execute function private.set_updated_at();
alter table public.progress_totals enable row level security;
revoke all on public.progress_totals from anon, authenticated;
grant select on public.progress_totals to authenticated;
grant all on public.progress_totals to service_role;
create policy "progress_totals: read own" on public.progress_totals
  for select to authenticated using (user_id = (select auth.uid()));
alter publication supabase_realtime add table public.progress_totals;

-- The current streak is a matter of today in the user's timezone, so it is worked out when read: a stored
-- one would need every user's row rewritten as days pass.
create view public.user_streaks with (security_invoker = true) as
select t.user_id,
       case when t.last_active_day >= (now() at time zone coalesce(f.timezone, 'UTC'))::date - 1
            then t.latest_run else 0 end as current_streak,
       t.longest_streak, t.last_active_day
from public.progress_totals t
left join public.user_profiles f on f.user_id = t.user_id;
revoke all on public.user_streaks from anon, authenticated;
grant select on public.user_streaks to authenticated, service_role;

-- Each user's categories ranked weakest first, among those with at least 3 scored answers: what the question
-- engine can recommend practising.
create view public.weakest_categories with (security_invoker = true) as
select t.user_id, c.category, c.average_score, c.scored_answers,
       rank() over (partition by t.user_id order by c.average_score, c.category) as rank
from public.progress_totals t
cross join lateral jsonb_each(t.categories) e
cross join lateral (select e.key::public.question_category as category,
                           (e.value ->> 'average_score')::numeric as average_score,
                           (e.value ->> 'scored_answers')::integer as scored_answers) c
where c.scored_answers >= 3;
revoke all on public.weakest_categories from anon, authenticated;
grant select on public.weakest_categories to authenticated, service_role;

-- The catalog: what can be earned, in display order. Readable by everyone (it is the product's copy). Each
-- entry is earned when one of the user's all-time figures reaches its threshold, and awarded by the run that
-- sees the figure cross it; an entry added later must be awarded to those already past it by its migration.
create table public.achievement_catalog (
  achievement_type text primary key check (achievement_type ~ '^[a-z][a-z0-9_]*$'),
  title text not null,
  description text not null,
  figure text not null check (figure in ('sessions_completed', 'questions_answered', 'longest_streak',
                                         'best_score', 'categories_scored', 'mock_interviews', 'improvement')),
  threshold numeric not null,
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

insert into public.achievement_catalog (achievement_type, title, description, figure, threshold, display_order)
values
  ('first_session', 'First steps', 'Completed your first practice session.', 'sessions_completed', 1, 10),
  ('sessions_10', 'Regular', 'Completed 10 practice sessions.', 'sessions_completed', 10, 20),
  ('sessions_50', 'Dedicated', 'Completed 50 practice sessions.', 'sessions_completed', 50, 30),
  ('answers_100', 'Hundred answers', 'Answered 100 questions.', 'questions_answered', 100, 40),
  ('streak_3', 'Three in a row', 'Practised 3 days in a row.', 'longest_streak', 3, 50),
  ('streak_7', 'A full week', 'Practised 7 days in a row.', 'longest_streak', 7, 60),
  ('streak_30', 'Habit formed', 'Practised 30 days in a row.', 'longest_streak', 30, 70),
  ('perfect_score', 'Flawless', 'An answer scored 100.', 'best_score', 100, 80),
  ('all_categories', 'Well rounded', 'Had answers scored in every category.', 'categories_scored',
   cardinality(enum_range(null::public.question_category)), 90),
  ('first_mock_interview', 'Dress rehearsal', 'Completed your first mock interview.', 'mock_interviews', 1, 100),
  ('improvement', 'On the rise', 'Your last 5 scored sessions average 10 points above the 5 before them.',
   'improvement', 10, 110);

alter table public.achievements
  add foreign key (achievement_type) references public.achievement_catalog (achievement_type);
create index idx_achievements_type on public.achievements (achievement_type);

-- Recompute the progress of everyone (in shard `shard` of `shards`) whose practice a UTC day touched, and award
-- what they earned. Users fall into 64 fixed buckets by a hash of their id (uuid_hash(user_id) & 63), which
-- the day-range indexes of answers and sessions carry (11.). A run takes its buckets' locks, so runs over the
-- same users wait for each other (each would rewrite the same all-time figures from its own snapshot, and the
-- later would drop what the earlier added), while the shards of one run hold disjoint buckets and run side by
-- side, each on its own connection (the schedule runs them concurrently: a busy day is CPU-bound).
create function service.aggregate_user_day(day date, shard integer default 0, shards integer default 1)
returns jsonb
language plpgsql
set search_path = ''
-- A busy day's working sets (a million answers, 100k users) fit in memory instead of spilling to disk. The
-- planner expects a group per answer when grouping them by user, local day and category (600k for a shard of
-- a busy day, not the 72k there are): given hash memory for that estimate, it hashes the answers instead of
-- sorting them (0.3 s less a shard).
set work_mem = '64MB'
set hash_mem_multiplier = 4
-- The shards are what spreads a day over the cores: parallel workers inside one would only add their
-- coordination (10% more CPU for a shard of a busy day, measured).
set max_parallel_workers_per_gather = 0
as $$
declare
  day_start timestamptz := day::timestamp at time zone 'utc';
  day_end timestamptz := (day + 1)::timestamp at time zone 'utc';
  buckets integer[];
  people integer;
  recomputed integer;
  written integer;
  changed integer;
  awarded integer;
begin
  if shards is null or shard is null or shards not between 1 and 64 or shard not between 0 and shards - 1 then
    raise exception using errcode = '22023',
      message = format('shard %s of %s does not exist', shard, shards),
      hint = 'shards is between 1 and 64, and shard between 0 and shards - 1.';
  end if;
  buckets := array(select generate_series(shard, 63, shards));
  perform pg_advisory_xact_lock(hashtext('service.aggregate_user_day'), b.bucket)
  from unnest(buckets) b (bucket)
  order by b.bucket;  -- always in the same order, so runs sharded differently cannot deadlock

  -- Every local day that overlaps the UTC day lies within a day either side of it (offsets are under a day).
  -- Each answer and completed session of those three UTC days counts on its local day, in the user's
  -- timezone (UTC without a profile); only the shard's users.
  create temporary table window_answers on commit drop as
  select r.user_id, (r.created_at at time zone coalesce(p.timezone, 'UTC'))::date as local_day, r.category,
         count(*) as answers, count(r.ai_score) as scored, sum(r.ai_score) as score_sum, max(r.ai_score) as best,
         bool_or(r.created_at >= day_start and r.created_at < day_end) as given_today
  from public.responses r
  left join public.user_profiles p on p.user_id = r.user_id
  where r.created_at >= day_start - interval '1 day' and r.created_at < day_end + interval '1 day'
    and (uuid_hash(r.user_id) & 63) = any(buckets)
  group by 1, 2, 3;
  create temporary table window_sessions on commit drop as
  select s.user_id, (s.ended_at at time zone coalesce(p.timezone, 'UTC'))::date as local_day, s.session_type,
         count(*) as sessions, bool_or(s.ended_at >= day_start and s.ended_at < day_end) as ended_today
  from public.practice_sessions s
  left join public.user_profiles p on p.user_id = s.user_id
  where s.ended_at >= day_start - interval '1 day' and s.ended_at < day_end + interval '1 day'
    and s.status = 'completed' and (uuid_hash(s.user_id) & 63) = any(buckets)
  group by 1, 2, 3;

  -- The (user, local day) pairs the UTC day changed: where answers were given or sessions completed in it,
  -- and where answers scored in it had been given. Those earlier days (`late`) may lie before the window:
  -- they are counted from the user's own answers and sessions of that day instead.
  create temporary table touched_days on commit drop as
  with today as (
    select a.user_id, a.local_day from window_answers a where a.given_today
    union
    select s.user_id, s.local_day from window_sessions s where s.ended_today
  )
  select t.user_id, t.local_day, false as late, null::timestamptz as local_start, null::timestamptz as local_end
  from today t
  union all
  select l.user_id, l.local_day, true, l.local_day::timestamp at time zone l.timezone,
         (l.local_day + 1)::timestamp at time zone l.timezone
  from (select distinct r.user_id, z.timezone, (r.created_at at time zone z.timezone)::date as local_day
        from public.responses r
        left join public.user_profiles p on p.user_id = r.user_id
        cross join lateral (select coalesce(p.timezone, 'UTC') as timezone) z
        where r.evaluated_at >= day_start and r.evaluated_at < day_end and r.created_at < day_start
          and (uuid_hash(r.user_id) & 63) = any(buckets)) l
  where not exists (select from today t where t.user_id = l.user_id and t.local_day = l.local_day);
  analyze touched_days;  -- temporary tables have no statistics of their own: joins to them are planned blind
  select count(distinct t.user_id) into people from touched_days t;

  -- The touched days' answers per category (the category travels with the answer).
  create temporary table day_categories on commit drop as
  select a.user_id, a.local_day, a.category, a.answers, a.scored, a.score_sum, a.best
  from window_answers a
  join touched_days t on t.user_id = a.user_id and t.local_day = a.local_day and not t.late
  union all
  select t.user_id, t.local_day, r.category, count(*), count(r.ai_score), sum(r.ai_score), max(r.ai_score)
  from touched_days t
  join public.responses r on r.user_id = t.user_id and r.created_at >= t.local_start and r.created_at < t.local_end
  where t.late
  group by 1, 2, 3;
  analyze day_categories (user_id, local_day);

  -- Day rows, recomputed whole for each touched local day; their figures are kept typed beside the JSON for
  -- the all-time sums below.
  create temporary table progress on commit drop as
  with answers as (
    select c.user_id, c.local_day, sum(c.answers) as answers, sum(c.scored) as scored,
           sum(c.score_sum) as score_sum, max(c.best) as best,
           coalesce((json_object_agg(c.category, json_build_object('answers', c.scored, 'score_sum', c.score_sum))
                       filter (where c.scored > 0))::jsonb, '{}') as by_category
    from day_categories c group by 1, 2
  ), sessions as (
    select n.user_id, n.local_day, sum(n.sessions) as sessions,
           coalesce(sum(n.sessions) filter (where n.session_type = 'mock_interview'), 0) as mock_interviews,
           jsonb_object_agg(n.session_type, n.sessions) as by_type
    from (select s.user_id, s.local_day, s.session_type, s.sessions
          from window_sessions s
          join touched_days t on t.user_id = s.user_id and t.local_day = s.local_day and not t.late
          union all
          select t.user_id, t.local_day, s.session_type, count(*)
          from touched_days t
          join public.practice_sessions s on s.user_id = t.user_id and s.ended_at >= t.local_start
            and s.ended_at < t.local_end and s.status = 'completed'
          where t.late
          group by 1, 2, 3) n
    group by 1, 2
  )
  select coalesce(a.user_id, n.user_id) as user_id, coalesce(a.local_day, n.local_day) as local_day,
         coalesce(a.answers, 0) as answers, coalesce(n.sessions, 0) as sessions,
         coalesce(n.mock_interviews, 0) as mock_interviews, coalesce(a.scored, 0) as scored,
         coalesce(a.score_sum, 0) as score_sum, a.best,
         jsonb_build_object('sessions_completed', coalesce(n.sessions, 0), 'by_type', coalesce(n.by_type, '{}'),
                            'scored', coalesce(a.scored, 0), 'score_sum', coalesce(a.score_sum, 0),
                            'best', a.best, 'by_category', coalesce(a.by_category, '{}')) as details
  from answers a
  full join sessions n on n.user_id = a.user_id and n.local_day = a.local_day
  order by 1, 2;
  analyze progress (user_id, local_day);  -- the keys are what joins need: skip sampling the JSON

  -- The day rows about to be replaced: the all-time figures are corrected by the difference (below).
  create temporary table replaced_days on commit drop as
  select d.user_id, d.period_start as local_day, d.metric_value as answers, d.details
  from progress p
  join public.user_progress d on d.user_id = p.user_id and d.metric_name = 'practice' and d.period = 'day'
    and d.period_start = p.local_day;
  analyze replaced_days (user_id, local_day);

  -- Only changed days are rewritten, so running an unchanged day again writes nothing. The bucket locks keep
  -- anyone else from adding day rows meanwhile, so the new ones are plain inserts.
  update public.user_progress d set metric_value = p.answers, details = p.details
  from progress p
  join replaced_days r on r.user_id = p.user_id and r.local_day = p.local_day
  where d.user_id = p.user_id and d.metric_name = 'practice' and d.period = 'day' and d.period_start = p.local_day
    and (r.answers, r.details) is distinct from (p.answers, p.details);
  get diagnostics written = row_count;
  changed := written;
  insert into public.user_progress (user_id, metric_name, period, period_start, metric_value, details)
  select p.user_id, 'practice', 'day', p.local_day, p.answers, p.details
  from progress p
  where not exists (select from replaced_days r where r.user_id = p.user_id and r.local_day = p.local_day);
  get diagnostics written = row_count;
  changed := changed + written;

  -- The users whose days changed (or who have no all-time figures yet), with their stored figures.
  create temporary table touched_users on commit drop as
  with changed_days as (
    select p.user_id from progress p
    left join replaced_days r on r.user_id = p.user_id and r.local_day = p.local_day
    where r.user_id is null or (r.answers, r.details) is distinct from (p.answers, p.details)
  )
  select u.user_id, t.user_id is not null as stored,
         coalesce(t.questions_answered, 0) as answers, coalesce(t.sessions_completed, 0) as sessions,
         coalesce(t.mock_interviews, 0) as mock_interviews, coalesce(t.scored_answers, 0) as scored,
         coalesce(t.score_sum, 0) as score_sum, t.best_score as best,
         coalesce(t.categories, '{}') as categories,
         (select count(*) from jsonb_object_keys(t.categories)) as categories_scored,
         t.last_active_day,
         coalesce(t.latest_run, 0) as latest_run, coalesce(t.longest_streak, 0) as longest, t.improvement
  from (select distinct d.user_id from touched_days d) u
  left join public.progress_totals t on t.user_id = u.user_id
  where t.user_id is null or u.user_id in (select c.user_id from changed_days c);
  analyze touched_users (user_id, stored);
  select count(*) into recomputed from touched_users;

  -- All-time figures: the stored ones plus what the recomputed days changed (new day rows minus the ones they
  -- replace), so a run costs what the window changed, not each user's whole history; a re-run with nothing
  -- new recomputes nothing. A user without all-time figures yet (or whose figures were deleted) is counted
  -- from all their day rows instead.
  create temporary table changes on commit drop as
  select p.user_id, p.answers, p.sessions, p.mock_interviews, p.scored, p.score_sum, p.best
  from touched_users u join progress p on p.user_id = u.user_id
  where u.stored
  union all
  select r.user_id, -r.answers, -(r.details ->> 'sessions_completed')::integer,
         -coalesce((r.details -> 'by_type' ->> 'mock_interview')::integer, 0),
         -(r.details ->> 'scored')::integer, -(r.details ->> 'score_sum')::numeric, null
  from touched_users u join replaced_days r on r.user_id = u.user_id
  where u.stored
  union all
  select d.user_id, d.metric_value, (d.details ->> 'sessions_completed')::integer,
         coalesce((d.details -> 'by_type' ->> 'mock_interview')::integer, 0),
         (d.details ->> 'scored')::integer, (d.details ->> 'score_sum')::numeric, (d.details ->> 'best')::numeric
  from touched_users u
  join public.user_progress d on d.user_id = u.user_id and d.metric_name = 'practice' and d.period = 'day'
  where not u.stored;

  -- The new totals of each category a change touched (the replaced days' sums read from their JSON), built
  -- as JSON text and converted once per user (half the cost of building JSONB value by value).
  create temporary table category_figures on commit drop as
  select n.user_id,
         (json_object_agg(n.category, json_build_object('scored_answers', n.scored, 'score_sum', n.score_sum,
                                                        'average_score', round(n.score_sum / n.scored, 2)))
            filter (where n.scored > 0))::jsonb as figures,
         array_agg(n.category) filter (where n.scored <= 0) as emptied
  from (select x.user_id, x.category,
               coalesce((u.categories -> x.category ->> 'scored_answers')::integer, 0) + x.scored as scored,
               coalesce((u.categories -> x.category ->> 'score_sum')::numeric, 0) + x.score_sum as score_sum
        from (select c.user_id, c.category, sum(c.scored) as scored, sum(c.score_sum) as score_sum
              from (select c.user_id, c.category::text, c.scored, c.score_sum
                    from touched_users u join day_categories c on c.user_id = u.user_id
                    where u.stored and c.scored > 0
                    union all
                    select r.user_id, k.key, -(k.value ->> 'answers')::integer, -(k.value ->> 'score_sum')::numeric
                    from touched_users u
                    join replaced_days r on r.user_id = u.user_id
                    cross join lateral jsonb_each(r.details -> 'by_category') k
                    where u.stored
                    union all
                    select d.user_id, k.key, (k.value ->> 'answers')::integer, (k.value ->> 'score_sum')::numeric
                    from touched_users u
                    join public.user_progress d on d.user_id = u.user_id and d.metric_name = 'practice'
                      and d.period = 'day'
                    cross join lateral jsonb_each(d.details -> 'by_category') k
                    where not u.stored) c
              group by 1, 2) x
        join touched_users u on u.user_id = x.user_id
        where x.scored <> 0 or x.score_sum <> 0) n
  group by n.user_id;

  create temporary table all_time_rows on commit drop as
  with totals as (
    select c.user_id, sum(c.answers) as answers, sum(c.sessions) as sessions,
           sum(c.mock_interviews) as mock_interviews, sum(c.scored) as scored, sum(c.score_sum) as score_sum,
           -- A personal best: the highest score any recomputed day holds, or the one stored.
           max(c.best) as best
    from changes c group by 1
  ), new_days as (
    select p.user_id, p.local_day
    from touched_users u
    join progress p on p.user_id = u.user_id
    left join replaced_days r on r.user_id = p.user_id and r.local_day = p.local_day
    where r.user_id is null
  ), carried as (
    -- The stored streak carries on when every newly active day comes after its last active day (practice
    -- today, the usual case); otherwise (no figures yet, or late data made an earlier day active) the user's
    -- runs are counted again from all their day rows, whose keys alone (an index-only read) are enough.
    select u.user_id, u.last_active_day, u.latest_run, u.longest
    from touched_users u
    where u.stored
      and not exists (select from new_days n where n.user_id = u.user_id and n.local_day <= u.last_active_day)
  ), streak_days as (
    select n.user_id, n.local_day from new_days n join carried c on c.user_id = n.user_id
    union all
    select d.user_id, d.period_start
    from touched_users u
    join public.user_progress d on d.user_id = u.user_id and d.metric_name = 'practice' and d.period = 'day'
    where not exists (select from carried c where c.user_id = u.user_id)
  ), runs as (
    -- Consecutive days share (day - its rank): one group per run.
    select r.user_id, min(r.local_day) as first_day, max(r.local_day) as last_day, count(*) as length
    from (select s.user_id, s.local_day,
                 s.local_day - (row_number() over (partition by s.user_id order by s.local_day))::integer as run
          from streak_days s) r
    group by r.user_id, r.run
  ), streaks as (
    -- A run that starts the day after the carried one continues it.
    select r.user_id, max(r.last_day) as last_active_day,
           (array_agg(r.length + case when r.first_day = c.last_active_day + 1 then c.latest_run else 0 end
                      order by r.last_day desc))[1] as latest_run,
           max(r.length + case when r.first_day = c.last_active_day + 1 then c.latest_run else 0 end) as longest
    from runs r left join carried c on c.user_id = r.user_id
    group by r.user_id
  ), trends as (
    select u.user_id, s.slope, s.scores, s.improvement
    from touched_users u
    cross join lateral (
      select coalesce(round(regr_slope(l.overall_score, l.ordinal)::numeric, 2), 0) as slope,
             coalesce(array_agg(l.overall_score order by l.ordinal), '{}') as scores,
             -- The last 5 scored sessions averaged against the 5 before them, once there are 10.
             case when count(*) = 10 then round(avg(l.overall_score) filter (where l.ordinal > 5)
                                                - avg(l.overall_score) filter (where l.ordinal <= 5), 2) end
               as improvement
      from (select s.overall_score, 11 - row_number() over (order by s.started_at desc) as ordinal
            from public.practice_sessions s
            where s.user_id = u.user_id and s.status = 'completed' and s.overall_score is not null
            order by s.started_at desc limit 10) l
    ) s
  )
  select u.user_id,
         u.answers + coalesce(t.answers, 0) as answers,
         u.sessions + coalesce(t.sessions, 0) as sessions,
         u.mock_interviews + coalesce(t.mock_interviews, 0) as mock_interviews,
         u.scored + coalesce(t.scored, 0) as scored,
         u.score_sum + coalesce(t.score_sum, 0) as score_sum,
         greatest(u.best, t.best) as best,
         (u.categories || coalesce(c.figures, '{}')) - coalesce(c.emptied, '{}') as categories,
         greatest(u.last_active_day, s.last_active_day) as last_active_day,
         case when s.last_active_day is null then u.latest_run else s.latest_run end as latest_run,
         greatest(u.longest, s.longest) as longest,
         tr.scores, tr.slope, tr.improvement
  from touched_users u
  left join totals t on t.user_id = u.user_id
  left join category_figures c on c.user_id = u.user_id
  left join streaks s on s.user_id = u.user_id
  left join trends tr on tr.user_id = u.user_id;

  -- Rewritten only when changed. The bucket locks keep anyone else from adding these users' rows meanwhile, so
  -- the users without figures get plain inserts (an upsert would lock each row before updating it).
  update public.progress_totals t
  set (questions_answered, sessions_completed, mock_interviews, scored_answers, score_sum, best_score, categories,
       latest_run, longest_streak, last_active_day, recent_scores, trend_slope, improvement)
    = (a.answers, a.sessions, a.mock_interviews, a.scored, a.score_sum, a.best, a.categories, a.latest_run,
       a.longest, a.last_active_day, a.scores, a.slope, a.improvement)
  from all_time_rows a
  where t.user_id = a.user_id
    and (t.questions_answered, t.sessions_completed, t.mock_interviews, t.scored_answers, t.score_sum,
         t.best_score, t.categories, t.latest_run, t.longest_streak, t.last_active_day, t.recent_scores,
         t.trend_slope, t.improvement)
      is distinct from
        (a.answers, a.sessions, a.mock_interviews, a.scored, a.score_sum, a.best, a.categories, a.latest_run,
         a.longest, a.last_active_day, a.scores, a.slope, a.improvement);
  get diagnostics written = row_count;
  changed := changed + written;
  insert into public.progress_totals (
    user_id, questions_answered, sessions_completed, mock_interviews, scored_answers, score_sum, best_score,
    categories, latest_run, longest_streak, last_active_day, recent_scores, trend_slope, improvement)
  select a.user_id, a.answers, a.sessions, a.mock_interviews, a.scored, a.score_sum, a.best, a.categories,
         a.latest_run, a.longest, a.last_active_day, a.scores, a.slope, a.improvement
  from all_time_rows a
  join touched_users u on u.user_id = a.user_id
  where not u.stored;
  get diagnostics written = row_count;
  changed := changed + written;

  -- Achievements: each catalog entry whose figure reached its threshold in this run (the stored figure was
  -- below it, or there was none). The unique key awards each once, whoever runs concurrently; the metadata
  -- is the figure that earned it.
  insert into public.achievements (user_id, achievement_type, metadata)
  select a.user_id, c.achievement_type, jsonb_build_object(c.figure, f.reached)
  from all_time_rows a
  join touched_users u on u.user_id = a.user_id
  cross join lateral (select count(*) as categories_scored from jsonb_object_keys(a.categories)) n
  cross join public.achievement_catalog c
  -- A case over the catalog's figures: a quarter cheaper than joining a row per figure to the catalog.
  cross join lateral (
    select case c.figure when 'sessions_completed' then a.sessions when 'questions_answered' then a.answers
                         when 'longest_streak' then a.longest when 'best_score' then a.best
                         when 'categories_scored' then n.categories_scored
                         when 'mock_interviews' then a.mock_interviews when 'improvement' then a.improvement end
             as reached,
           case c.figure when 'sessions_completed' then u.sessions when 'questions_answered' then u.answers
                         when 'longest_streak' then u.longest when 'best_score' then u.best
                         when 'categories_scored' then u.categories_scored
                         when 'mock_interviews' then u.mock_interviews when 'improvement' then u.improvement end
             as before
  ) f
  where f.reached >= c.threshold and (f.before is null or f.before < c.threshold)
  on conflict (user_id, achievement_type) do nothing;
  get diagnostics awarded = row_count;

  drop table window_answers, window_sessions, touched_days, day_categories, progress, replaced_days, touched_users,
    changes, category_figures, all_time_rows;
  return jsonb_build_object('day', day, 'shard', shard, 'shards', shards, 'users', people, 'recomputed', recomputed,
                            'changed', changed, 'achievements_awarded', awarded);
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

revoke all on function private.refresh_materialized_views(),
  service.aggregate_user_day(date, integer, integer), service.run_maintenance(timestamptz, jsonb),
  service.dashboard(integer, date)
  from public, anon, authenticated;
grant execute on function private.refresh_materialized_views(),
  service.aggregate_user_day(date, integer, integer), service.run_maintenance(timestamptz, jsonb),
  service.dashboard(integer, date) to service_role;
