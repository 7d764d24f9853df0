-- Undo 10. Practice sessions and evaluation
drop policy "answers: delete own audio" on storage.objects;
drop policy "answers: replace own audio" on storage.objects;
drop policy "answers: upload own audio" on storage.objects;
drop policy "answers: read own audio" on storage.objects;
-- Refused while the bucket still holds audio (its objects reference it): empty it through Storage first.
delete from storage.buckets where id = 'answers';
drop function service.fail_evaluation(uuid, text);
drop function service.complete_evaluation(uuid, jsonb);
drop function service.save_transcript(uuid, text);
drop function service.begin_evaluation(uuid);
drop function service.request_evaluation(uuid, uuid);
drop function private.refund_quota(uuid, text);
drop trigger on_session_ended on public.practice_sessions;
drop function private.on_session_ended();
drop function private.refresh_session_score(uuid);
drop trigger guard_answer on public.responses;
drop function private.guard_response();
drop function public.end_session(uuid, public.session_status);
drop function public.start_session(public.session_type, jsonb);
