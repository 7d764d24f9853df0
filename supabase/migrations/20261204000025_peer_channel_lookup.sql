-- 25. A peer room's private channel is authorized by one primary-key lookup
--
-- Realtime runs the policies on `realtime.messages` at every join of a private channel (and when it re-checks a
-- joined one). 24.'s policies compared `'peer-room:' || id` of every room with the topic: a scan of every room
-- per join, growing with the rooms ever held. The topic is the channel's name, which the client chooses: it is
-- read as a room id only when it has exactly the shape of one (46 bytes, `peer-room:` and a lowercase UUID, as
-- `'peer-room:' || id` writes it), checked before the cast, so a malformed name is no room and never an error.

drop policy "peer rooms: participants receive" on realtime.messages;
drop policy "peer rooms: participants send" on realtime.messages;

create policy "peer rooms: participants receive" on realtime.messages
  for select to authenticated using (
    extension in ('broadcast', 'presence')
    and exists (select from public.peer_rooms r
                where r.id = (select case when octet_length(realtime.topic()) = 46
                                               and realtime.topic() ~ '^peer-room:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                                          then substr(realtime.topic(), 11)::uuid end)
                  and (select auth.uid()) in (r.user_a, r.user_b)
                  and now() between r.starts_at - interval '15 minutes' and r.ends_at + interval '15 minutes'));
create policy "peer rooms: participants send" on realtime.messages
  for insert to authenticated with check (
    extension in ('broadcast', 'presence')
    and exists (select from public.peer_rooms r
                where r.id = (select case when octet_length(realtime.topic()) = 46
                                               and realtime.topic() ~ '^peer-room:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                                          then substr(realtime.topic(), 11)::uuid end)
                  and (select auth.uid()) in (r.user_a, r.user_b)
                  and now() between r.starts_at - interval '15 minutes' and r.ends_at + interval '15 minutes'));
