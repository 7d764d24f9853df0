-- Undo 11. Platform analytics
drop function service.aggregate_platform_day(date);
drop function private.monthly_revenue(integer, public.billing_interval);
drop index public.idx_subscription_changes_occurred_at;
drop index public.idx_practice_sessions_ended_at_bucket;
drop index public.idx_session_questions_served_at;
drop index public.idx_responses_evaluated_at;
drop index public.idx_responses_created_at_bucket;
drop index public.idx_users_created_at;
