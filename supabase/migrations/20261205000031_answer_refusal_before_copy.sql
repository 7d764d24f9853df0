-- 31. An oversized answer is refused before PostgreSQL copies the row for the triggers
--
-- 29. left one hostile payload over its 50 ms: a 48 MB answer_text inserted into public.responses cost 60-65 ms
-- of the server's CPU beyond sending and parsing it, while private.guard_response refuses it by reading its
-- header. The time goes to copies made before that check runs: PostgreSQL forms a heap tuple from the row for
-- the first trigger function that fires, and plpgsql copies it again into NEW. A trigger's WHEN condition is
-- evaluated before both, on the row's values where they lie, so the two unbounded-by-type text columns are
-- sized there: private.refuse_oversized raises (PT413, naming the limit) rather than answer false, and it is
-- given octet_length, read from the value's header. guard_response keeps every other check (characters,
-- the audio path's shape, plan, session state); guard_answer is still the first before-row trigger by name.

create function private.refuse_oversized(bytes integer, max_bytes integer, what text) returns boolean
language plpgsql immutable
set search_path = ''
as $$
begin
  if bytes > max_bytes then
    raise sqlstate 'PT413' using
      message = what,
      hint = 'Send less: docs/security.md lists every limit.';
  end if;
  return true;
end
$$;
-- A WHEN condition runs as the writer: authenticated (whose usage of schema private 28. granted) and the service.
grant execute on function private.refuse_oversized(integer, integer, text) to authenticated, service_role;
comment on function private.refuse_oversized(integer, integer, text) is
  'For a trigger''s WHEN condition: raises PT413 with `what` when bytes > max_bytes, else true. Give it '
  'octet_length(new.<column>): a WHEN condition reads the new row before PostgreSQL copies it for the trigger '
  'functions, so megabytes are refused without being copied.';

drop trigger guard_answer on public.responses;
create trigger guard_answer before insert or update of answer_text, audio_path, time_taken_seconds
  on public.responses for each row
  when (private.refuse_oversized(octet_length(new.answer_text), 80000,
                                 'answer_text is longer than 20,000 characters')
        and private.refuse_oversized(octet_length(new.audio_path), 300, 'audio_path is longer than 300 bytes'))
  execute function private.guard_response();
