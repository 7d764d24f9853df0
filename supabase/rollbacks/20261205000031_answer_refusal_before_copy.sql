-- Undo 31: guard_response alone sizes answer_text and audio_path, after the row is copied for it.
drop trigger guard_answer on public.responses;
create trigger guard_answer before insert or update of answer_text, audio_path, time_taken_seconds
  on public.responses for each row execute function private.guard_response();
drop function private.refuse_oversized(integer, integer, text);
