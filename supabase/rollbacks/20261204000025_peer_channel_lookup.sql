-- Undo 25: the policies of 24., which compare every room's channel name with the topic.
drop policy "peer rooms: participants receive" on realtime.messages;
drop policy "peer rooms: participants send" on realtime.messages;

create policy "peer rooms: participants receive" on realtime.messages
  for select to authenticated using (
    extension in ('broadcast', 'presence')
    and exists (select from public.peer_rooms r
                where 'peer-room:' || r.id::text = (select realtime.topic())
                  and (select auth.uid()) in (r.user_a, r.user_b)
                  and now() between r.starts_at - interval '15 minutes' and r.ends_at + interval '15 minutes'));
create policy "peer rooms: participants send" on realtime.messages
  for insert to authenticated with check (
    extension in ('broadcast', 'presence')
    and exists (select from public.peer_rooms r
                where 'peer-room:' || r.id::text = (select realtime.topic())
                  and (select auth.uid()) in (r.user_a, r.user_b)
                  and now() between r.starts_at - interval '15 minutes' and r.ends_at + interval '15 minutes'));
