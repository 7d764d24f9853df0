-- Undo 6. Analytics
alter publication supabase_realtime drop table public.achievements, public.user_progress;
drop table public.ai_usage;
drop table public.analytics_daily;
drop table public.user_progress;
drop table public.achievements;
