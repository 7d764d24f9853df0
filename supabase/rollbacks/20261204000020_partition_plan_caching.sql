-- Undo 20. Partitioned lookups keep one cached plan: the functions choose their plans as before.
alter function private.set_response_category() reset plan_cache_mode;
alter function private.session_question_list(uuid, integer) reset plan_cache_mode;
alter function private.serve_questions(uuid, uuid, jsonb, integer) reset plan_cache_mode;
alter function service.serve_more_questions(uuid, uuid, jsonb, integer, jsonb) reset plan_cache_mode;
