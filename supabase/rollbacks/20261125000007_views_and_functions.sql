-- Undo 7. Views and functions
drop view public.session_summaries;
drop function public.entitlements(uuid, timestamptz);
