-- Undo 1. Extensions and utilities
drop function private.set_updated_at();
alter default privileges in schema public grant execute on functions to anon, authenticated;
alter default privileges in schema public grant all on sequences to anon, authenticated;
alter default privileges in schema public grant all on tables to anon, authenticated;
alter default privileges grant execute on functions to public;
drop schema service;
drop schema private;
-- Without cascade: if anything outside this project uses pg_trgm, the rollback stops here and changes nothing.
drop extension pg_trgm;
