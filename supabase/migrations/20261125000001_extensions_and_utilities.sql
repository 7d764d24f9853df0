-- 1. Extensions and utilities
--
-- Schemas:
--   public   exposed through PostgREST; every table has RLS and explicit, minimal grants.
--   private  never exposed; internal tables and the security definer functions triggers use.
--   service  exposed through PostgREST to service_role only: the SQL functions the Lambda handlers call.
--            anon and authenticated have no usage on it, so PostgREST refuses them before any function runs.

create extension if not exists pg_trgm with schema extensions;

create schema private;
revoke all on schema private from public;
grant usage on schema private to service_role;

create schema service;
revoke all on schema service from public;
grant usage on schema service to service_role;

-- Secure by default: new functions are not executable by everyone, and new tables in public are not open to
-- the API roles. Each migration grants back exactly what each object needs.
alter default privileges revoke execute on functions from public;
alter default privileges in schema public revoke all on tables from anon, authenticated;
alter default privileges in schema public revoke all on sequences from anon, authenticated;
alter default privileges in schema public revoke execute on functions from anon, authenticated;

-- Every table keeps updated_at current with this trigger.
create function private.set_updated_at() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;
