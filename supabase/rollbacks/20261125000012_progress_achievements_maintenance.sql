-- Undo 12. Per-user progress, achievements and maintenance (archived answers go back to public.responses)
drop function service.dashboard(integer, date);
drop function service.run_maintenance(timestamptz, jsonb);
drop index public.idx_practice_sessions_in_progress;
drop index public.idx_responses_evaluation_pending;
drop function private.refresh_materialized_views();
drop materialized view private.question_bank_stock;

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
left join public.responses r on r.session_question_id = sq.id
group by s.id;
drop view public.response_history;
insert into public.responses select * from archive.responses;
drop schema archive cascade;

drop function service.aggregate_user_day(date, integer, integer);
drop index public.idx_achievements_type;
alter table public.achievements drop constraint achievements_achievement_type_fkey;
drop table public.achievement_catalog;
drop view public.weakest_categories;
drop view public.user_streaks;
drop table public.progress_totals;
drop index public.idx_practice_sessions_user_scored;
