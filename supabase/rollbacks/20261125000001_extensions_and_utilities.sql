-- Undo 1. Extensions and utilities
drop function private.set_updated_at();
alter default privileges in schema public grant execute on functions to anon, authenticated;
alter default privileges in schema public grant all on sequences to anon, authenticated;
alter default privileges in schema public grant all on tables to anon, authenticated;
alter default privileges grant execute on functions to public;
drop schema service;
drop schema private;
-- pg_trgm stays: it may predate this migration (Supabase projects can enable it from the dashboard), and
-- dropping an extension other objects use would fail or take them with it.
