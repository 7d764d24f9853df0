-- 14. Functions are secure by default in our schemas only
--
-- Migration 1 revoked EXECUTE from PUBLIC on every function the migrating role creates, in every schema. That
-- also reached extensions installed later by the same role (pgTAP from `supabase test db`, anything enabled
-- from the dashboard or a migration): their functions became unusable for anon and authenticated. PostgreSQL
-- cannot scope that revocation to schemas (per-schema default privileges only add to the global ones), so the
-- global default goes back to PostgreSQL's, and an event trigger revokes PUBLIC's EXECUTE from each function or
-- procedure created in public, private, service or archive as it is created. Each migration still grants back
-- exactly what each function needs; existing functions keep the privileges they have.
-- (Supabase lets the postgres role create event triggers through supautils; they do not fire for superusers.)

create function private.revoke_public_execute() returns event_trigger
language plpgsql
set search_path = ''
as $$
declare
  created record;
begin
  for created in
    select object_type, object_identity from pg_catalog.pg_event_trigger_ddl_commands()
    where object_type in ('function', 'procedure')
      and schema_name in ('public', 'private', 'service', 'archive')
  loop
    execute pg_catalog.format('revoke execute on %s %s from public', created.object_type, created.object_identity);
  end loop;
end
$$;
revoke execute on function private.revoke_public_execute() from public;

create event trigger revoke_public_execute on ddl_command_end
  when tag in ('CREATE FUNCTION', 'CREATE PROCEDURE')
  execute function private.revoke_public_execute();

alter default privileges grant execute on functions to public;
