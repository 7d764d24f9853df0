-- Undo 2. User management
drop trigger on_auth_user_updated on auth.users;
drop trigger on_auth_user_created on auth.users;
drop function private.sync_user_from_auth();
drop table public.user_profiles;
drop table public.users;
drop type public.experience_level;
