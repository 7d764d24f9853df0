-- 29. A hostile payload is refused before the database copies it again
--
-- PostgreSQL copies a value of tens of megabytes several times before any check can run: it parses it, puts it
-- in the statement's plan and forms the row from it. What a check adds on top is ours to keep small:
--
-- * `perform private.limit_size(..., new.preferences, ...)` in a trigger runs the call as a query of its own,
--   whose plan holds another copy of the value (a memory copy of its size, tens of milliseconds for 48 MB).
--   `private.check_profile` now tests `pg_column_size` inline, which reads the value's header where it lies.
-- * On `storage.objects` the upload policy's 1 kB bound on `user_metadata` runs after PostgreSQL has computed
--   Storage's generated column `path_tokens`, which copies the row twice more. A before-row trigger runs
--   before that, so it refuses the oversized metadata first (PT413, naming the limit). It also bounds what the
--   policy never sees: the Storage API writes an upload's row as its own superuser after checking the policy
--   with a row without metadata, so the metadata from the `x-metadata` header or the multipart `metadata`
--   field reaches the table unchecked by RLS. Triggers fire for every role.

-- A profile as written by its owner: sizes first (read from the values' headers, in place), then an IANA time
-- zone and a canonical target role.
create or replace function private.check_profile() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if pg_column_size(new.preferences) > 4096 then
    raise sqlstate 'PT413' using
      message = format('preferences is %s bytes; the limit is 4096', pg_column_size(new.preferences)),
      hint = 'Send less: docs/security.md lists every limit.';
  end if;
  if pg_column_size(new.skills) > 4096 then
    raise sqlstate 'PT413' using
      message = format('skills is %s bytes; the limit is 4096', pg_column_size(new.skills)),
      hint = 'Send less: docs/security.md lists every limit.';
  end if;
  if cardinality(new.skills) > 50 or exists (select from unnest(new.skills) s where octet_length(s) > 60) then
    raise sqlstate 'PT422' using message = 'skills: at most 50, each at most 60 bytes';
  end if;
  if octet_length(new.timezone) > 64 or not exists (select from private.time_zones z where z.name = new.timezone) then
    raise sqlstate 'PT422' using
      message = format('timezone %L is not an IANA time zone name', left(new.timezone, 64)),
      hint = 'Use a name such as Europe/Paris or America/New_York (pg_timezone_names).';
  end if;
  if octet_length(new.target_role) > 120 then
    raise sqlstate 'PT422' using message = 'target_role is longer than 120 bytes';
  end if;
  if new.target_role is not null and (tg_op = 'INSERT' or new.target_role is distinct from old.target_role) then
    new.target_role := private.canonical_term('role', new.target_role);
  end if;
  return new;
end
$$;

comment on function private.limit_size(text, anyelement, integer) is
  'Refuses a value over max_bytes (PT413), reading its size from its header. Called with PERFORM, the calling '
  'query''s plan holds a copy of the value: where megabytes can arrive (a trigger on a client-written column), '
  'test pg_column_size(new.<column>) in an IF instead, as private.check_profile does.';

-- Custom metadata of a stored object: at most 1 kB (the upload policy of 13. says the same for the uploader's
-- own inserts). Named to fire before Storage's own before-row triggers (`objects_*`, `update_objects_updated_at`):
-- triggers of one event fire in name order.
create function private.limit_object_metadata() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if pg_column_size(new.user_metadata) > 1024 then
    raise sqlstate 'PT413' using
      message = format('user_metadata is %s bytes; the limit is 1024', pg_column_size(new.user_metadata)),
      hint = 'Send less: docs/security.md lists every limit.';
  end if;
  return new;
end
$$;
create trigger limit_user_metadata before insert or update of user_metadata on storage.objects
  for each row execute function private.limit_object_metadata();
