-- Undo 4. Question management
drop table public.question_answer_keys;
drop table public.questions;
drop function private.question_rank(numeric, integer, bigint);
drop function private.normalize_question(text);
drop type public.question_source;
drop type public.difficulty;
drop type public.question_category;
