-- Undo 5. Session tracking
alter publication supabase_realtime drop table public.practice_sessions, public.responses;
drop table public.question_ratings;
drop table public.responses;
drop function private.set_response_category();
drop table public.session_questions;
drop table public.practice_sessions;
drop function private.guard_session_status();
drop type public.evaluation_status;
drop type public.session_status;
drop type public.session_type;
