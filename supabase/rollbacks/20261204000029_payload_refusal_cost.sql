-- Undo 29: the upload policy alone bounds user_metadata; check_profile calls private.limit_size as 13. wrote it.
drop trigger limit_user_metadata on storage.objects;
drop function private.limit_object_metadata();

comment on function private.limit_size(text, anyelement, integer) is null;

create or replace function private.check_profile() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform private.limit_size('preferences', new.preferences, 4096);
  perform private.limit_size('skills', new.skills, 4096);
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
