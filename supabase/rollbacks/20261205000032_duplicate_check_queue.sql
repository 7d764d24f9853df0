-- Undo 32: curation looks for near-duplicates of every version created since its last run, as 23. wrote it
-- (versions still queued are examined by that window only if they are recent).
drop function service.curate_questions(timestamptz, integer);
drop trigger queue_duplicate_check on public.question_versions;
drop function private.queue_duplicate_check();
drop table private.duplicate_checks_due;

create function service.curate_questions(as_of timestamptz default now()) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  since timestamptz;
  until timestamptz := as_of - interval '5 minutes';
  recent timestamptz;
  oldest timestamptz;
  tallied bigint;
  examined integer;
  moves jsonb;
begin
  select w.processed_until into since
  from private.rollup_watermarks w where w.name = 'question_curation' for update;
  since := coalesce(since, '-infinity');
  until := greatest(until, since);
  recent := since - interval '10 minutes';

  -- 1. Answers evaluated in the window, into each question's sums.
  select min(r.created_at) into oldest
  from public.responses r where r.evaluated_at > since and r.evaluated_at <= until and r.ai_score is not null;
  with answered as (
    select sq.question_id, r.ai_score::double precision as score, t.average_score::double precision as ability
    from public.responses r
    -- By id alone: the session is implied, and a second key column misleads the row estimate into nested loops.
    join public.session_questions sq on sq.id = r.session_question_id
    left join public.progress_totals t on t.user_id = r.user_id
    where r.evaluated_at > since and r.evaluated_at <= until and r.ai_score is not null
      and r.created_at >= oldest
      -- A question is served before it is answered, in a session that lasts at most a day or so.
      and sq.served_at >= oldest - interval '7 days' and sq.served_at <= until
  ), grouped as (
    -- The regr_* aggregates of one (ability, score) pair share one transition state (n, sums, centred
    -- squares and products), less than half the work of a sum per figure; raw sums are rebuilt from them.
    select a.question_id, count(*)::integer as answers, sum(a.score) as score_sum,
           (count(*) filter (where a.score < 25))::integer as low_scores,
           (count(*) filter (where a.score >= 90))::integer as high_scores,
           regr_count(a.ability, a.score)::integer as paired,
           coalesce(regr_avgx(a.ability, a.score), 0) as score_mean,
           coalesce(regr_avgy(a.ability, a.score), 0) as ability_mean,
           coalesce(regr_sxx(a.ability, a.score), 0) as sxx, coalesce(regr_syy(a.ability, a.score), 0) as syy,
           coalesce(regr_sxy(a.ability, a.score), 0) as sxy
    from answered a group by a.question_id
  ), sums as (
    select g.question_id, g.answers, g.score_sum, g.low_scores, g.high_scores, g.paired,
           g.paired * g.score_mean as paired_score_sum,
           g.sxx + g.paired * g.score_mean ^ 2 as paired_score_squares,
           g.paired * g.ability_mean as ability_sum,
           g.syy + g.paired * g.ability_mean ^ 2 as ability_squares,
           g.sxy + g.paired * g.score_mean * g.ability_mean as score_ability_sum
    from grouped g
  ), saved as (
    insert into private.question_score_stats as c
      (question_id, answers, score_sum, low_scores, high_scores, paired, paired_score_sum, paired_score_squares,
       ability_sum, ability_squares, score_ability_sum)
    select * from sums
    on conflict (question_id) do update
    set answers = c.answers + excluded.answers, score_sum = c.score_sum + excluded.score_sum,
        low_scores = c.low_scores + excluded.low_scores, high_scores = c.high_scores + excluded.high_scores,
        paired = c.paired + excluded.paired, paired_score_sum = c.paired_score_sum + excluded.paired_score_sum,
        paired_score_squares = c.paired_score_squares + excluded.paired_score_squares,
        ability_sum = c.ability_sum + excluded.ability_sum,
        ability_squares = c.ability_squares + excluded.ability_squares,
        score_ability_sum = c.score_ability_sum + excluded.score_ability_sum
    returning 1
  )
  select coalesce(sum(s.answers), 0) into tallied from sums s;

  -- 2. The questions with new evidence, and what it says.
  perform set_config('pg_trgm.similarity_threshold', '0.6', true);
  with touched as (
    select c.question_id as id from private.question_score_stats c where c.updated_at >= now()
    union select r.question_id from public.question_reports r where r.created_at >= recent
    union select r.question_id from public.question_ratings r where r.updated_at >= recent
    union select v.question_id from public.question_versions v where v.created_at >= recent
    union select q.id from public.questions q where q.status = 'provisional'
  ), evidence as (
    select q.id, q.status, q.difficulty, q.usage_count, q.rating_count,
           (10 * 3.5 + q.rating_count * coalesce(q.rating_avg, 3.5)) / (10 + q.rating_count) as bayesian_rating,
           coalesce(c.answers, 0) as answers, c.score_sum / nullif(c.answers, 0) as mean_score,
           c.low_scores::double precision / nullif(c.answers, 0) as low_share,
           c.high_scores::double precision / nullif(c.answers, 0) as high_share,
           coalesce(c.paired, 0) as paired,
           (c.paired * c.score_ability_sum - c.paired_score_sum * c.ability_sum)
             / nullif(sqrt(greatest(c.paired * c.paired_score_squares - c.paired_score_sum ^ 2, 0)
                           * greatest(c.paired * c.ability_squares - c.ability_sum ^ 2, 0)), 0) as correlation,
           r.open_reports, r.offensive_reports,
           greatest(3, ceil(0.02 * q.usage_count))::integer as report_threshold,
           greatest(2, ceil(0.005 * q.usage_count))::integer as offensive_threshold,
           d.id as duplicate_of, d.similarity,
           q.status = 'provisional'
             and exists (select from public.served_questions s
                         where s.user_id = q.provisional_for and s.question_id = q.id)
             and not exists (select from public.question_ratings x where x.question_id = q.id and x.rating < 3)
             as admissible
    from touched t
    join public.questions q on q.id = t.id and q.status in ('provisional', 'active')
    left join private.question_score_stats c on c.question_id = q.id
    cross join lateral (
      select count(*)::integer as open_reports,
             (count(*) filter (where x.reason = 'offensive'))::integer as offensive_reports,
             bool_or(x.reason = 'duplicate') as duplicate_reported
      from public.question_reports x where x.question_id = q.id and x.resolved_at is null
    ) r
    left join lateral (
      select o.id, extensions.similarity(private.normalize_question(o.content),
                                         private.normalize_question(q.content)) as similarity
      from public.questions o
      where (r.duplicate_reported
             or exists (select from public.question_versions v
                        where v.question_id = q.id and v.version = q.version and v.created_at >= recent))
        and private.normalize_question(o.content) operator(extensions.%) private.normalize_question(q.content)
        and o.category = q.category and o.status = 'active' and (o.created_at, o.id) < (q.created_at, q.id)
      order by 2 desc limit 1
    ) d on true
  ), verdicts as (
    select e.*, v.to_status, v.reason
    from evidence e
    cross join lateral (
      select case
        when e.duplicate_of is not null then 'retired'
        when e.offensive_reports >= e.offensive_threshold then 'under_review'
        when e.open_reports >= e.report_threshold then 'under_review'
        when e.answers >= 30 and (e.mean_score < 15 or e.low_share >= 0.8) then 'under_review'
        when e.answers >= 30 and e.high_share >= 0.8 then 'under_review'
        when e.answers >= 30 and ((e.difficulty = 'easy' and e.mean_score < 55)
                                  or (e.difficulty = 'hard' and e.mean_score > 65)) then 'under_review'
        when e.paired >= 50 and e.correlation < 0.1 then 'under_review'
        when e.rating_count >= 10 and e.bayesian_rating < 2.5 then 'retired'
        when e.admissible then 'active'
      end::public.question_status as to_status,
      case
        when e.duplicate_of is not null then 'near-duplicate of an older question'
        when e.offensive_reports >= e.offensive_threshold then 'reported offensive'
        when e.open_reports >= e.report_threshold then 'reported'
        when e.answers >= 30 and (e.mean_score < 15 or e.low_share >= 0.8) then 'nobody can answer it'
        when e.answers >= 30 and e.high_share >= 0.8 then 'everybody aces it'
        when e.answers >= 30 and e.difficulty = 'easy' and e.mean_score < 55 then 'harder than its difficulty says'
        when e.answers >= 30 and e.difficulty = 'hard' and e.mean_score > 65 then 'easier than its difficulty says'
        when e.paired >= 50 and e.correlation < 0.1 then 'scores do not follow ability'
        when e.rating_count >= 10 and e.bayesian_rating < 2.5 then 'rated poorly'
        when e.admissible then 'admitted: served to its user, no rating below 3'
      end as reason
    ) v
  ), moved as (
    insert into public.question_transitions (question_id, to_status, reason, figures, actor, moderator_id)
    select v.id, v.to_status, v.reason,
           jsonb_strip_nulls(jsonb_build_object(
             'usage_count', v.usage_count, 'open_reports', v.open_reports,
             'report_threshold', v.report_threshold, 'offensive_reports', v.offensive_reports,
             'offensive_threshold', v.offensive_threshold, 'answers', v.answers,
             'mean_score', round(v.mean_score::numeric, 2), 'low_share', round(v.low_share::numeric, 3),
             'high_share', round(v.high_share::numeric, 3), 'paired_answers', v.paired,
             'correlation', round(v.correlation::numeric, 3), 'rating_count', v.rating_count,
             'bayesian_rating', round(v.bayesian_rating::numeric, 2), 'duplicate_of', v.duplicate_of,
             'similarity', round(v.similarity::numeric, 3))),
           'curation', null
    from verdicts v
    where v.to_status is not null and v.to_status <> v.status
    order by v.id
    returning to_status
  )
  select (select count(*) from evidence),
         jsonb_build_object(
           'questions_promoted', count(*) filter (where m.to_status = 'active'),
           'questions_sent_to_review', count(*) filter (where m.to_status = 'under_review'),
           'questions_retired', count(*) filter (where m.to_status = 'retired'))
  into examined, moves
  from moved m;

  insert into private.rollup_watermarks (name, processed_until) values ('question_curation', until)
  on conflict (name) do update set processed_until = excluded.processed_until;
  return moves || jsonb_build_object('answers_tallied', tallied, 'questions_examined', examined,
                                     'since', since, 'until', until);
end
$$;
grant execute on function service.curate_questions(timestamptz) to service_role;
