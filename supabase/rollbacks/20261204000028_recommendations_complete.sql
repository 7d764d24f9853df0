-- Undo 28: recommend_next reads as the caller again (security invoker), recommended sessions only by their own
-- user, the picks from the user's level only, POST /questions without `mode`, SM-2 graded by the mean score.
-- Sessions already served keep their questions and reasons.

-- recommend_next as in 22.
create or replace function public.recommend_next(count integer default 5, category public.question_category default null)
returns setof public.recommendation
language plpgsql stable
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  me uuid := auth.uid();
  wanted integer := recommend_next.count;
  target_success constant double precision := 0.7;
begin
  if me is null then
    raise sqlstate 'PT401' using message = 'recommendations are for a signed-in user';
  end if;
  if wanted is null or wanted not between 1 and 20 then
    raise sqlstate 'PT422' using message = 'count must be a whole number from 1 to 20';
  end if;
  return query
  with profile as (
    select p.target_role as role,
           case coalesce(p.experience_level, 'mid') when 'entry' then 1 when 'mid' then 2 when 'senior' then 3
                                                    when 'lead' then 4 when 'executive' then 5 end as level_cell
    from (select) one left join public.user_profiles p on p.user_id = me
  ), this_month as (
    select r.category, avg(r.ai_score) as score
    from public.responses r
    where r.user_id = me and r.created_at >= now() - interval '30 days' and r.ai_score is not null
    group by r.category
  ), categories as (
    select c.category, coalesce(a.ability, 0) as ability, a.last_practised_at, a.due_at, a.review_interval_days,
           m.score as month_score,
           rank() over (order by m.score nulls last) as month_rank, count(m.score) over () as month_scored,
           -- Weakness (the chance of failing a question of average difficulty), plus up to 0.5 as the review
           -- falls due; a category never practised is due (as a new card is in SM-2).
           1 - 1 / (1 + exp(-coalesce(a.ability, 0)))
             + case when a.last_practised_at is null then 0.5
                    else 0.5 * least(greatest(extract(epoch from now() - a.due_at) / 86400.0
                                              / a.review_interval_days + 1, 0), 1) end as priority
    from unnest(enum_range(null::public.question_category)) c (category)
    left join public.category_abilities a on a.user_id = me and a.category = c.category
    left join this_month m on m.category = c.category
  ), chosen as (
    select c.*, row_number() over (order by c.priority desc, c.category) as place,
           10 * case c.category when 'behavioral' then 1 when 'technical' then 2 when 'situational' then 3
                                when 'leadership' then 4 when 'problem_solving' then 5 when 'culture_fit' then 6 end
             + (select pr.level_cell from profile pr) as cell
    from categories c
    where recommend_next.category is null or c.category = recommend_next.category
  ), slots as (
    select ch.category, count(*)::integer as n
    from generate_series(1, wanted) g
    join chosen ch on ch.place = (g - 1) % least(3, (select count(*) from chosen)) + 1
    group by ch.category
  )
  select pick.id, ch.category, pick.difficulty, pick.difficulty_estimate,
         1 / (1 + exp(pick.difficulty_estimate - ch.ability)),
         format('%s: %s%s; %s%% chance of success at this difficulty',
                replace(ch.category::text, '_', ' '),
                case when ch.month_score is not null and ch.month_rank = 1 and ch.month_scored > 1
                       then format('lowest score this month (%s)', round(ch.month_score))
                     when ch.month_score is not null then format('scored %s this month', round(ch.month_score))
                     when ch.last_practised_at is null then 'not practised yet'
                     else 'no scored answers this month' end,
                case when ch.last_practised_at is null then ''
                     else ', last practised ' || case floor(extract(epoch from now() - ch.last_practised_at) / 86400)
                                                  when 0 then 'today' when 1 then '1 day ago'
                                                  else floor(extract(epoch from now() - ch.last_practised_at)
                                                             / 86400)::integer || ' days ago' end
                          || case when ch.due_at <= now() then ' (due for review)' else '' end end,
                round(100 / (1 + exp(pick.difficulty_estimate - ch.ability))))
  from slots s
  join chosen ch on ch.category = s.category
  cross join profile pr
  cross join lateral (
    select near.id, near.difficulty, near.difficulty_estimate
    from (
      (select q.id, q.difficulty, q.difficulty_estimate from public.questions q
       where q.is_active and q.selection_cell = ch.cell
         and q.difficulty_estimate >= ch.ability - ln(target_success / (1 - target_success))
         and (q.provisional_for is null or q.provisional_for = me)
         and (pr.role is null or q.target_role is null or lower(q.target_role) = lower(pr.role))
         and not exists (select from public.served_questions sv where sv.user_id = me and sv.question_id = q.id
                         offset 0)
       order by q.difficulty_estimate limit 20)
      union all
      (select q.id, q.difficulty, q.difficulty_estimate from public.questions q
       where q.is_active and q.selection_cell = ch.cell
         and q.difficulty_estimate < ch.ability - ln(target_success / (1 - target_success))
         and (q.provisional_for is null or q.provisional_for = me)
         and (pr.role is null or q.target_role is null or lower(q.target_role) = lower(pr.role))
         and not exists (select from public.served_questions sv where sv.user_id = me and sv.question_id = q.id
                         offset 0)
       order by q.difficulty_estimate desc limit 20)
    ) near
    order by abs(near.difficulty_estimate - (ch.ability - ln(target_success / (1 - target_success)))), near.id
    limit s.n
  ) pick
  -- The categories take turns: each one's nearest pick, then each one's second...
  order by row_number() over (partition by ch.category
                              order by abs(pick.difficulty_estimate
                                           - (ch.ability - ln(target_success / (1 - target_success))))),
           ch.place;
end
$$;

-- serve_recommended as in 22.
drop function private.serve_recommended(uuid, integer, public.question_category);
create function private.serve_recommended(session_id uuid, wanted integer, category public.question_category)
returns integer
language plpgsql
set search_path = ''
as $$
declare
  served integer;
  session_user_id uuid;
begin
  perform set_config('synchronous_commit', 'off', true);
  select s.user_id into session_user_id from public.practice_sessions s
  where s.id = serve_recommended.session_id for update;
  with picks as (
    select r.question_id, r.reason, gen_random_uuid() as id, row_number() over () as ordinal
    from public.recommend_next(wanted, serve_recommended.category) r
  ), claimed as (
    insert into public.served_questions (user_id, question_id, session_question_id)
    select session_user_id, p.question_id, p.id from picks p
    on conflict on constraint served_questions_pkey do nothing
    returning session_question_id
  )
  insert into public.session_questions (id, session_id, user_id, question_id, position, widening, pick_reason)
  select p.id, serve_recommended.session_id, session_user_id, p.question_id,
         row_number() over (order by p.ordinal), 'recommended', p.reason
  from picks p join claimed on claimed.session_question_id = p.id;
  get diagnostics served = row_count;
  return served;
end
$$;
revoke all on function private.serve_recommended(uuid, integer, public.question_category) from public, anon, authenticated;

drop function private.recommendations(uuid, integer, public.question_category);
revoke usage on schema private from authenticated;
drop function private.unserved_near(uuid, text, integer, double precision, integer);

-- on_session_started, checked_request, request_questions and calibrate_answers as in 22.
create or replace function private.on_session_started() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  step jsonb;
  asked integer := 0;
  per_question_seconds integer := coalesce((new.config ->> 'question_time_limit_seconds')::integer, 180);
begin
  if new.config ->> 'mode' = 'recommended' then
    if new.session_type = 'mock_interview' then
      raise sqlstate 'PT422' using message = 'a mock interview follows its own arc; it has no recommended mode';
    end if;
    if new.user_id is distinct from auth.uid() then
      raise sqlstate 'PT422' using message = 'a recommended session is started by its user',
        hint = 'Call start_session with the user''s own token.';
    end if;
    perform private.consume_quota(new.user_id, 'practice_sessions');
    perform private.serve_recommended(new.id, coalesce((new.config ->> 'count')::integer, 5),
                                      (new.config ->> 'category')::public.question_category);
    return null;
  end if;
  if new.session_type = 'custom' and ((new.config ->> 'category') is null or (new.config ->> 'difficulty') is null
                                      or coalesce((new.config ->> 'count')::integer, 0) not between 1 and 20) then
    raise sqlstate 'PT422' using
      message = 'a custom session needs config.category, config.difficulty and config.count (1-20)';
  end if;
  if new.session_type = 'mock_interview' and not coalesce(
      (select (e.features).mock_interviews from public.entitlements(new.user_id) e), false) then
    raise sqlstate 'PT402' using message = 'mock interviews come with a paid plan',
      hint = 'Upgrade with POST /billing/checkout.';
  end if;
  perform private.consume_quota(new.user_id, 'practice_sessions');
  for step in select * from jsonb_array_elements(private.session_plan(new.user_id, new.session_type, new.config))
  loop
    perform private.serve_questions(new.user_id, new.id, step -> 'request', (step ->> 'count')::integer);
    asked := asked + (step ->> 'count')::integer;
  end loop;
  if new.session_type = 'mock_interview' then
    update public.practice_sessions set time_limit_seconds = asked * per_question_seconds where id = new.id;
  end if;
  return null;
end
$$;

create or replace function private.checked_request(request jsonb) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  unknown text;
  checked jsonb;
  tag jsonb;
  tags text[] := '{}';
begin
  perform private.limit_size('the request (session config)', request, 2048);
  if jsonb_typeof(request) is distinct from 'object' then
    raise sqlstate 'PT422' using message = 'the session config must be a JSON object';
  end if;
  select string_agg(k, ', ') into unknown from jsonb_object_keys(request) k
  where k <> all (array['category', 'difficulty', 'experience_level', 'target_role', 'tags', 'count',
                        'question_time_limit_seconds', 'session_id', 'mode']);
  if unknown is not null then
    raise sqlstate 'PT422' using
      message = format('unknown session config keys: %s', left(unknown, 200)),
      hint = 'Known keys: category, difficulty, experience_level, target_role, tags, count, '
             || 'question_time_limit_seconds, mode.';
  end if;
  checked := request - 'target_role' - 'tags';
  if request ? 'mode' and not coalesce(request -> 'mode' = '"recommended"', false) then
    raise sqlstate 'PT422' using message = 'mode must be "recommended" (or left out for the filters given)';
  end if;
  if request ? 'mode' and request ? 'difficulty' then
    raise sqlstate 'PT422' using message = 'a recommended session picks difficulty from your answers',
      hint = 'Leave out difficulty, or leave out mode to choose it yourself.';
  end if;
  if request ? 'category' and not coalesce(request ->> 'category' = any (enum_range(null::public.question_category)::text[]), false) then
    raise sqlstate 'PT422' using message = 'category must be one of: '
      || array_to_string(enum_range(null::public.question_category), ', ');
  end if;
  if request ? 'difficulty' and not coalesce(request ->> 'difficulty' = any (enum_range(null::public.difficulty)::text[]), false) then
    raise sqlstate 'PT422' using message = 'difficulty must be one of: '
      || array_to_string(enum_range(null::public.difficulty), ', ');
  end if;
  if request ? 'experience_level'
     and not coalesce(request ->> 'experience_level' = any (enum_range(null::public.experience_level)::text[]), false) then
    raise sqlstate 'PT422' using message = 'experience_level must be one of: '
      || array_to_string(enum_range(null::public.experience_level), ', ');
  end if;
  if request ? 'count' and not coalesce(jsonb_typeof(request -> 'count') = 'number'
                                        and request ->> 'count' ~ '^[0-9]{1,2}$'
                                        and (request ->> 'count')::integer between 1 and 20, false) then
    raise sqlstate 'PT422' using message = 'count must be a whole number from 1 to 20';
  end if;
  if request ? 'question_time_limit_seconds'
     and not coalesce(jsonb_typeof(request -> 'question_time_limit_seconds') = 'number'
                      and request ->> 'question_time_limit_seconds' ~ '^[0-9]{1,4}$'
                      and (request ->> 'question_time_limit_seconds')::integer between 30 and 1800, false) then
    raise sqlstate 'PT422' using message = 'question_time_limit_seconds must be a whole number from 30 to 1800';
  end if;
  if request ? 'session_id' and not coalesce(request ->> 'session_id'
       ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$', false) then
    raise sqlstate 'PT422' using message = 'session_id must be a UUID';
  end if;

  if jsonb_typeof(request -> 'target_role') = 'string' then
    if octet_length(request ->> 'target_role') > 120 then
      raise sqlstate 'PT422' using message = 'target_role is longer than 120 bytes';
    end if;
    checked := checked || jsonb_build_object('target_role',
      private.canonical_term('role', request ->> 'target_role'));
  elsif coalesce(jsonb_typeof(request -> 'target_role'), 'null') <> 'null' then
    raise sqlstate 'PT422' using message = 'target_role must be a string';
  end if;

  if request ? 'tags' then
    if jsonb_typeof(request -> 'tags') <> 'array' or jsonb_array_length(request -> 'tags') > 8 then
      raise sqlstate 'PT422' using message = 'tags must be an array of at most 8 strings';
    end if;
    for tag in select * from jsonb_array_elements(request -> 'tags') loop
      if jsonb_typeof(tag) <> 'string' or octet_length(tag #>> '{}') > 40 then
        raise sqlstate 'PT422' using message = 'each tag must be a string of at most 40 bytes';
      end if;
      tags := tags || private.canonical_term('tag', tag #>> '{}');
    end loop;
    checked := checked || jsonb_build_object('tags',
      (select coalesce(jsonb_agg(distinct t), '[]') from unnest(tags) t));
  end if;
  return checked;
end
$$;

create or replace function service.request_questions(user_id uuid, request jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  ahead_after constant integer := 40;
  ahead_batch constant integer := 30;
  wanted integer;
  session uuid;
  session_owner uuid;
  session_status public.session_status;
  served jsonb;
  widened integer;
  ahead jsonb;
begin
  request := private.checked_request(request);
  wanted := (request ->> 'count')::integer;
  session := (request ->> 'session_id')::uuid;
  if wanted is null then
    raise sqlstate 'PT422' using message = 'count must be between 1 and 20';
  end if;
  perform private.consume_quota(request_questions.user_id, 'question_requests');

  if session is null then
    -- Starting the session serves its first questions (private.on_session_started).
    insert into public.practice_sessions (user_id, session_type, config)
    values (request_questions.user_id, 'custom', request - 'session_id')
    returning id into session;
    served := private.session_question_list(session, 0);
  else
    select s.user_id, s.status into session_owner, session_status
    from public.practice_sessions s where s.id = session;
    if session_owner is distinct from request_questions.user_id then
      raise sqlstate 'PT404' using message = format('no session %s of yours', session);
    elsif session_status <> 'in_progress' then
      raise sqlstate 'PT409' using
        message = format('session %s is %s', session, session_status), hint = 'Start a new session.';
    end if;
    served := private.serve_questions(request_questions.user_id, session, request, wanted);
  end if;

  select count(*) into widened from jsonb_array_elements(served) q
  where q ->> 'widening' not in ('exact', 'generated', 'recommended');
  if widened > 0 and request ? 'category' and request ? 'difficulty' and request ? 'experience_level' then
    with keys as (
      select coalesce(t, '') as tag
      from (select jsonb_array_elements_text(coalesce(nullif(request -> 'tags', '[]'), '[null]')) t) k
    ), counted as (
      insert into private.widening_demand as d (category, difficulty, experience_level, tag, widened)
      select (request ->> 'category')::public.question_category, (request ->> 'difficulty')::public.difficulty,
             (request ->> 'experience_level')::public.experience_level, k.tag, widened
      from keys k
      order by k.tag  -- the same lock order in every request
      on conflict (category, difficulty, experience_level, tag) do update
        set widened = case when d.widened + excluded.widened >= ahead_after then 0
                           else d.widened + excluded.widened end,
            generations = d.generations + (d.widened + excluded.widened >= ahead_after)::integer,
            last_generated_at = case when d.widened + excluded.widened >= ahead_after then now()
                                     else d.last_generated_at end
      returning d.tag, d.widened = 0 and d.last_generated_at = now() as due
    )
    select jsonb_build_object('category', request -> 'category', 'difficulty', request -> 'difficulty',
                              'experience_level', request -> 'experience_level',
                              'tags', case when c.tag = '' then '[]'::jsonb else jsonb_build_array(c.tag) end,
                              'count', ahead_batch)
    into ahead
    from counted c where c.due order by c.tag limit 1;
  end if;

  return jsonb_build_object(
    'session_id', session,
    'request', request - 'session_id',
    'questions', served,
    'deficit', wanted - jsonb_array_length(served),
    'generate_ahead', ahead,
    'ai_generation_included',
      coalesce((select (e.features).ai_generated_questions
                from public.entitlements(request_questions.user_id) e), false)
  );
end
$$;

create or replace function service.calibrate_answers(as_of timestamptz default now()) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  since timestamptz;
  until timestamptz := as_of - interval '5 minutes';
  ability_memory constant double precision := 20;  -- cap on a user's precision: ~80 answers' worth
  max_step constant double precision := 1;          -- logits per run, for a batch far from the estimate
  answers integer;
  questions_changed integer;
  touched_users uuid[];
  touched_categories public.question_category[];
  projected integer;
begin
  select w.processed_until into since from private.rollup_watermarks w where w.name = 'calibration' for update;
  since := coalesce(since, '-infinity');
  if until <= since then
    return jsonb_build_object('answers_calibrated', 0, 'questions_calibrated', 0, 'abilities_updated', 0,
                              'projections_updated', 0, 'since', since);
  end if;

  -- One statement: the questions' and the abilities' steps both start from the estimates before this batch.
  with batch as materialized (
    select r.user_id, r.category, sq.question_id, r.created_at,
           least(greatest(r.ai_score / 100.0, 0), 1)::double precision as outcome,
           1 / (1 + exp(q.difficulty_estimate - coalesce(a.ability, 0))) as p
    from public.responses r
    join public.session_questions sq on sq.id = r.session_question_id and sq.session_id = r.session_id
    join public.questions q on q.id = sq.question_id
    left join public.category_abilities a on a.user_id = r.user_id and a.category = r.category
    where r.evaluated_at > since and r.evaluated_at <= until and r.ai_score is not null
  ), by_question as (
    -- Questions: one Newton step each from what the batch says.
    select b.question_id, sum(b.p - b.outcome) as gradient, sum(b.p * (1 - b.p)) as information, count(*) as n
    from batch b group by b.question_id
  ), question_steps as (
    select q.id, q.difficulty,
           q.difficulty_estimate + least(greatest(g.gradient / (1 + q.calibration_information + g.information),
                                                  -max_step), max_step) as estimate,
           q.calibration_information + g.information as information,
           q.calibration_answers + g.n as n
    from by_question g join public.questions q on q.id = g.question_id
  ), questions_written as (
    update public.questions q
    set calibrated_difficulty = s.estimate,
        calibration_information = s.information,
        difficulty_uncertainty = 1 / sqrt(1 + s.information),
        calibration_answers = s.n,
        label_disagrees = s.n >= 10 and (
          s.estimate - 2 / sqrt(1 + s.information) > case s.difficulty when 'easy' then -0.5 when 'medium' then 0.5
                                                                      else 'infinity' end
          or s.estimate + 2 / sqrt(1 + s.information) < case s.difficulty when 'easy' then '-infinity'
                                                                         when 'medium' then -0.5 else 0.5 end)
    from question_steps s
    where q.id = s.id
    returning q.id
  ), by_ability as (
    -- Abilities, and the category's SM-2 review: quality 0-5 from the run's mean score; below 3 starts over.
    select b.user_id, b.category, sum(b.outcome - b.p) as gradient, sum(b.p * (1 - b.p)) as information,
           count(*) as n, max(b.created_at) as last_at, round(5 * avg(b.outcome)) as quality
    from batch b group by b.user_id, b.category
  ), ability_steps as (
    select g.user_id, g.category, g.last_at,
           coalesce(a.ability, 0) + least(greatest(g.gradient / (coalesce(a.ability_precision, 1) + g.information),
                                                   -max_step), max_step) as ability,
           least(coalesce(a.ability_precision, 1) + g.information, ability_memory) as ability_precision,
           coalesce(a.answers, 0) + g.n as answers,
           case when g.quality < 3 then 0 else coalesce(a.repetitions, 0) + 1 end as repetitions,
           greatest(1.3, coalesce(a.ease, 2.5) + 0.1 - (5 - g.quality) * (0.08 + (5 - g.quality) * 0.02)) as ease,
           coalesce(a.review_interval_days, 1) as interval_before
    from by_ability g
    left join public.category_abilities a on a.user_id = g.user_id and a.category = g.category
  ), scheduled as (
    select s.*, case when s.repetitions <= 1 then 1.0 when s.repetitions = 2 then 6.0
                     else least(s.interval_before * s.ease, 180) end as review_interval_days
    from ability_steps s
  ), abilities_written as (
    insert into public.category_abilities as a (user_id, category, ability, ability_precision, answers,
                                                last_practised_at, repetitions, ease, review_interval_days, due_at)
    select s.user_id, s.category, s.ability, s.ability_precision, s.answers, s.last_at, s.repetitions, s.ease,
           s.review_interval_days, s.last_at + make_interval(secs => s.review_interval_days * 86400)
    from scheduled s
    on conflict (user_id, category) do update
      set ability = excluded.ability, ability_precision = excluded.ability_precision, answers = excluded.answers,
          last_practised_at = greatest(a.last_practised_at, excluded.last_practised_at),
          repetitions = excluded.repetitions, ease = excluded.ease,
          review_interval_days = excluded.review_interval_days,
          due_at = greatest(a.last_practised_at, excluded.last_practised_at)
                   + make_interval(secs => excluded.review_interval_days * 86400)
    returning a.user_id, a.category
  )
  select (select count(*) from batch), (select count(*) from questions_written), array_agg(w.user_id),
         array_agg(w.category)
  into answers, questions_changed, touched_users, touched_categories
  from abilities_written w;

  -- The four-week projection of each touched category: least squares through the last 8 weeks' scored answers
  -- (x in days from as_of), at x = 28, with an 80% prediction interval; at least 3 answers on 2 days or more.
  with touched as (
    select * from unnest(touched_users, touched_categories) t (user_id, category)
  ), fits as (
    select t.user_id, t.category, f.*
    from touched t
    cross join lateral (
      select regr_count(r.ai_score, x.days) as n, regr_intercept(r.ai_score, x.days) as intercept,
             regr_slope(r.ai_score, x.days) as slope, regr_sxx(r.ai_score, x.days) as sxx,
             regr_syy(r.ai_score, x.days) as syy, regr_sxy(r.ai_score, x.days) as sxy,
             regr_avgx(r.ai_score, x.days) as mean_days
      from public.responses r
      cross join lateral (select extract(epoch from r.created_at - as_of)::double precision / 86400 as days) x
      where r.user_id = t.user_id and r.category = t.category and r.ai_score is not null
        and r.created_at >= as_of - interval '56 days' and r.created_at <= as_of
    ) f
  ), projections as (
    select f.user_id, f.category, f.intercept + f.slope * 28 as centre,
           1.2816 * sqrt(greatest(f.syy - f.sxy * f.sxy / f.sxx, 0) / greatest(f.n - 2, 1))
             * sqrt(1 + 1.0 / f.n + (28 - f.mean_days) ^ 2 / f.sxx) as half_width
    from fits f
    where f.n >= 3 and f.sxx > 0.5
  )
  update public.category_abilities a
  set projected_score = least(greatest(p.centre, 0), 100),
      projected_low = least(greatest(p.centre - p.half_width, 0), 100),
      projected_high = least(greatest(p.centre + p.half_width, 0), 100),
      projected_for = (as_of + interval '28 days')::date
  from projections p
  where a.user_id = p.user_id and a.category = p.category;
  get diagnostics projected = row_count;

  insert into private.rollup_watermarks (name, processed_until) values ('calibration', until)
  on conflict (name) do update set processed_until = excluded.processed_until;
  return jsonb_build_object('answers_calibrated', answers, 'questions_calibrated', questions_changed,
                            'abilities_updated', coalesce(cardinality(touched_users), 0),
                            'projections_updated', projected, 'since', since, 'until', until);
end
$$;

-- session_question_list as in 17. (and 20.'s plan caching).
create or replace function private.session_question_list(session_id uuid, after_position integer) returns jsonb
language plpgsql stable
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  started timestamptz := (select s.started_at from public.practice_sessions s
                          where s.id = session_question_list.session_id);
begin
  return (
    select coalesce(jsonb_agg(jsonb_build_object(
        'session_question_id', sq.id, 'position', sq.position, 'widening', sq.widening, 'id', q.id,
        'content', q.content, 'category', q.category, 'difficulty', q.difficulty,
        'experience_level', q.experience_level, 'target_role', q.target_role, 'tags', q.tags,
        'source', q.source
      ) order by sq.position), '[]')
    from public.session_questions sq
    join public.questions q on q.id = sq.question_id
    where sq.session_id = session_question_list.session_id and sq.served_at >= started
      and sq.position > after_position
  );
end
$$;
