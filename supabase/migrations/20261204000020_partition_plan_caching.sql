-- 20. Partitioned lookups keep one cached plan.
--
-- The functions below look up a session's served questions by id with a bound on the partition key that is a
-- variable (`served_at >= started`, the session's start). PL/pgSQL plans such a statement for its values the first
-- five times, then compares: a generic plan of a statement over every month's partition is costed above the
-- pruned custom plans, so PostgreSQL keeps planning it again on every call, and planning a join over the
-- partitioned table is what an answer's insert and a question request spent most of their time on
-- (bench/partitioning.py; docs/scaling.md has the figures). A generic plan prunes the months before the session
-- at executor startup instead, and its index choice does not depend on the bound (every lookup is by session or
-- served-question id). PostgreSQL 15-17 lock every partition of a generic plan at executor startup (fixed in 18):
-- AccessShare locks held to the end of the transaction, on session_questions' months (retention detaches only
-- months of responses; a new month's creation locks the parent, which every plan locks anyway).

alter function private.set_response_category() set plan_cache_mode = force_generic_plan;
alter function private.session_question_list(uuid, integer) set plan_cache_mode = force_generic_plan;
alter function private.serve_questions(uuid, uuid, jsonb, integer) set plan_cache_mode = force_generic_plan;
alter function service.serve_more_questions(uuid, uuid, jsonb, integer, jsonb)
  set plan_cache_mode = force_generic_plan;
