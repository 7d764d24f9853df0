-- Undo 9. Question engine
drop function service.rollup_question_stats();
drop function service.ai_spend_today();
drop function service.record_ai_usage(jsonb);
drop function service.add_generated_questions(jsonb, jsonb);
drop function service.generation_lease_held(text);
drop function service.release_generation_lease(text, uuid);
drop function service.acquire_generation_lease(text, integer);
drop function service.serve_more_questions(uuid, uuid, jsonb, integer, jsonb);
drop function service.request_questions(uuid, jsonb);
drop trigger on_session_started on public.practice_sessions;
drop function private.on_session_started();
drop function private.session_plan(uuid, public.session_type, jsonb);
drop function private.serve_questions(uuid, uuid, jsonb, integer);
drop function private.session_question_list(uuid, integer);
drop function private.question_candidates(uuid, jsonb, integer);
drop function private.consume_quota(uuid, text, integer);
drop table private.rollup_watermarks;
drop table private.generation_leases;
