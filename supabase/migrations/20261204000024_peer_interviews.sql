-- 24. Live peer mock interviews: requests, matching, rooms, chat, peer feedback, no-shows, blocks and reports
--
-- Two users practise together: each asks for a peer session (role, level, time window, time zone); the matcher
-- pairs compatible requests into a room; the participants check in (seats), which opens its two turns. In turn 1
-- the first user interviews the second, in turn 2 they swap. The interviewer of a turn reads the question's answer key (a copy made for the
-- turn, readable by that interviewer only); the candidate does not. Chat rows go through Realtime's publication;
-- the room's broadcast/presence channel (topic `peer-room:<room id>`, private) is authorized by policies on
-- realtime.messages. Feedback uses the AI evaluation's category rubric and 1-5 scale, and a user reads the
-- feedback they received once they have given theirs or the room's feedback deadline has passed.
-- Everything here is for a plan with `peer_sessions` (paid plans: a live session exposes one user to another,
-- and a paid account is a costly identity to throw away after harassing someone; it costs no AI spend).
--
-- What the other participant keeps when one account is deleted: the room and the turns (the deleted user's side
-- set to null), their own seat and messages. Feedback between the two and blocks naming the deleted user go with
-- it; a report about the deleted user stays for the moderators with its reported user set to null.

-- Plans -------------------------------------------------------------------------------------------------------

alter type public.plan_features add attribute peer_sessions boolean;
update public.plans set features = features || jsonb_build_object('peer_sessions', code <> 'free');

-- The rubric ----------------------------------------------------------------------------------------------------

-- The category criteria and weights of functions/evaluation/rubrics.py (RUBRIC_SET rubric-v1), so a peer's
-- scores weigh what the AI evaluation's weigh (tests/peer checks the two agree).
create table private.rubric_criteria (
  category public.question_category not null,
  name text not null,
  weight numeric(4, 3) not null check (weight > 0 and weight <= 1),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (category, name)
);
create trigger set_updated_at before update on private.rubric_criteria
  for each row execute function private.set_updated_at();
alter table private.rubric_criteria enable row level security;
grant select on private.rubric_criteria to service_role;
insert into private.rubric_criteria (category, name, weight) values
  ('behavioral', 'situation', 0.15), ('behavioral', 'task', 0.15), ('behavioral', 'action', 0.35),
  ('behavioral', 'result', 0.25), ('behavioral', 'reflection', 0.10),
  ('technical', 'correctness', 0.35), ('technical', 'depth', 0.20), ('technical', 'trade_offs', 0.20),
  ('technical', 'practical_experience', 0.10), ('technical', 'communication', 0.15),
  ('situational', 'understanding', 0.20), ('situational', 'approach', 0.35), ('situational', 'judgment', 0.25),
  ('situational', 'communication', 0.20),
  ('leadership', 'direction', 0.20), ('leadership', 'people', 0.25), ('leadership', 'execution', 0.25),
  ('leadership', 'impact', 0.20), ('leadership', 'self_awareness', 0.10),
  ('problem_solving', 'understanding', 0.20), ('problem_solving', 'structure', 0.25),
  ('problem_solving', 'reasoning', 0.25), ('problem_solving', 'solution', 0.20),
  ('problem_solving', 'communication', 0.10),
  ('culture_fit', 'values', 0.25), ('culture_fit', 'collaboration', 0.25), ('culture_fit', 'self_awareness', 0.20),
  ('culture_fit', 'alignment', 0.15), ('culture_fit', 'specificity', 0.15);

-- Tables --------------------------------------------------------------------------------------------------------

create type public.peer_request_status as enum ('waiting', 'matched', 'cancelled', 'expired');
create type public.peer_room_status as enum ('scheduled', 'held', 'missed');
create type public.peer_report_reason as enum ('no_show', 'harassment', 'inappropriate', 'spam', 'other');
create type public.peer_report_status as enum ('open', 'actioned', 'dismissed');

create table public.peer_rooms (
  id uuid primary key default gen_random_uuid(),
  target_role text not null,
  experience_level public.experience_level not null,
  -- Null once that participant's account is deleted: the other keeps the room.
  user_a uuid references public.users (id) on delete set null,
  user_b uuid references public.users (id) on delete set null,
  starts_at timestamptz not null,
  ends_at timestamptz not null,
  -- After it, each participant reads the feedback they received whether or not they gave theirs.
  feedback_due_at timestamptz not null,
  status public.peer_room_status not null default 'scheduled',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check (ends_at > starts_at and feedback_due_at >= ends_at)
);
comment on table public.peer_rooms is
  'A live peer session of two users (user_a interviews first); its channel is the private topic peer-room:<id>.';
create index idx_peer_rooms_user_a on public.peer_rooms (user_a);
create index idx_peer_rooms_user_b on public.peer_rooms (user_b);
create index idx_peer_rooms_to_settle on public.peer_rooms (starts_at) where status = 'scheduled';

create table public.peer_requests (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null default auth.uid() references public.users (id) on delete cascade,
  target_role text not null,
  experience_level public.experience_level not null,
  available_from timestamptz not null,
  available_until timestamptz not null,
  timezone text not null,
  -- The matcher's order: the request's time, later by an hour per no-show in the last 90 days (server-set).
  priority_at timestamptz not null default now(),
  status public.peer_request_status not null default 'waiting',
  room_id uuid references public.peer_rooms (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check (available_until > available_from)
);
comment on table public.peer_requests is
  'A request for a peer session; its user cancels it while waiting (status cancelled), the matcher sets '
  'matched and room_id.';
create unique index peer_requests_one_waiting on public.peer_requests (user_id) where status = 'waiting';
create index idx_peer_requests_matching on public.peer_requests (target_role, experience_level, priority_at, id)
  where status = 'waiting';
create index idx_peer_requests_user_created on public.peer_requests (user_id, created_at);
create index idx_peer_requests_room on public.peer_requests (room_id);

-- A participant's attendance: the row they write when they check in (joined_at is the server's time), or the
-- no-show the scheduled run records for a participant who never did.
create table public.peer_seats (
  room_id uuid not null references public.peer_rooms (id) on delete cascade,
  user_id uuid not null references public.users (id) on delete cascade,
  joined_at timestamptz default now(),
  no_show boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (room_id, user_id)
);
comment on table public.peer_seats is
  'A participant''s check-in (insert room_id and user_id; the server records joined_at), or the no-show the '
  'server records 10 minutes after the start.';
create index idx_peer_seats_user on public.peer_seats (user_id, created_at);

create table public.peer_turns (
  id uuid primary key default gen_random_uuid(),
  room_id uuid not null references public.peer_rooms (id) on delete cascade,
  turn smallint not null check (turn in (1, 2)),
  interviewer_id uuid references public.users (id) on delete set null,
  candidate_id uuid references public.users (id) on delete set null,
  -- Null when the bank had no fresh question for the candidate: the interviewer asks their own.
  question_id uuid references public.questions (id) on delete set null,
  category public.question_category not null,
  -- Set when the interviewer's feedback on the candidate arrives (by trigger).
  feedback_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (room_id, turn)
);
comment on table public.peer_turns is
  'The two turns of a room: who interviews whom on which question, and the rubric category of its feedback.';
create index idx_peer_turns_interviewer on public.peer_turns (interviewer_id, question_id);
create index idx_peer_turns_candidate on public.peer_turns (candidate_id, question_id);
create index idx_peer_turns_question on public.peer_turns (question_id);

-- The answer key of a turn's question, for its interviewer only (copied when the room opens; the candidate's
-- policy never matches). Kept apart from public.question_answer_keys, whose policy is the bank's.
create table public.peer_turn_keys (
  turn_id uuid primary key references public.peer_turns (id) on delete cascade,
  interviewer_id uuid not null references public.users (id) on delete cascade,
  evaluation_criteria jsonb not null default '[]',
  key_points text[] not null default '{}',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.peer_turn_keys is 'The answer key of a turn''s question, readable by its interviewer only.';
create index idx_peer_turn_keys_interviewer on public.peer_turn_keys (interviewer_id);

create table public.peer_messages (
  id bigint generated always as identity primary key,
  room_id uuid not null references public.peer_rooms (id) on delete cascade,
  user_id uuid not null default auth.uid() references public.users (id) on delete cascade,
  body text not null check (char_length(body) between 1 and 2000),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.peer_messages is
  'Chat of a room (Realtime publication): participants read and write; 2,000 characters, 30 a minute a user.';
create index idx_peer_messages_room on public.peer_messages (room_id, id);
create index idx_peer_messages_user_created on public.peer_messages (user_id, created_at);

create table public.peer_feedback (
  id uuid primary key default gen_random_uuid(),
  turn_id uuid not null references public.peer_turns (id) on delete cascade,
  room_id uuid not null references public.peer_rooms (id) on delete cascade,
  author_id uuid not null default auth.uid() references public.users (id) on delete cascade,
  subject_id uuid not null references public.users (id) on delete cascade,
  -- {"<criterion of the turn's category rubric>": 1-5, ...}: every criterion, nothing else.
  scores jsonb not null,
  -- 0-100 from the scores and the rubric's weights, as the AI evaluation computes ai_score (server-set).
  overall_score numeric(5, 2) not null check (overall_score between 0 and 100),
  rubric_version text not null,
  comment text check (char_length(comment) <= 2000),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (turn_id, author_id)
);
comment on table public.peer_feedback is
  'The interviewer''s feedback on the candidate of a turn; the candidate reads it after giving theirs or after '
  'the room''s feedback_due_at.';
-- Filled by the insert trigger; null defaults (as nullif: PostgreSQL keeps no null literal default) so the generated
-- client types do not ask a client to send them (as responses.category, migration 19).
alter table public.peer_feedback
  alter column room_id set default nullif('00000000-0000-0000-0000-000000000000'::uuid,
                                          '00000000-0000-0000-0000-000000000000'::uuid),
  alter column subject_id set default nullif('00000000-0000-0000-0000-000000000000'::uuid,
                                             '00000000-0000-0000-0000-000000000000'::uuid),
  alter column overall_score set default nullif(0::numeric, 0::numeric),
  alter column rubric_version set default nullif(''::text, ''::text);
create index idx_peer_feedback_room on public.peer_feedback (room_id);
create index idx_peer_feedback_author on public.peer_feedback (author_id);
create index idx_peer_feedback_subject on public.peer_feedback (subject_id);

-- A blocked pair never meets again (the matcher skips it in both directions). There is no unblocking.
create table public.peer_blocks (
  blocker_id uuid not null default auth.uid() references public.users (id) on delete cascade,
  blocked_id uuid not null references public.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (blocker_id, blocked_id),
  check (blocker_id <> blocked_id)
);
comment on table public.peer_blocks is 'Users a user never wants to be matched with again (someone they met).';
create index idx_peer_blocks_blocked on public.peer_blocks (blocked_id, blocker_id);

create table public.peer_reports (
  id uuid primary key default gen_random_uuid(),
  room_id uuid references public.peer_rooms (id) on delete set null,
  reporter_id uuid not null default auth.uid() references public.users (id) on delete cascade,
  -- Kept for the moderators, without its subject, when the reported account is deleted.
  reported_id uuid references public.users (id) on delete set null,
  reason public.peer_report_reason not null,
  details text check (char_length(details) <= 2000),
  status public.peer_report_status not null default 'open',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (room_id, reporter_id)
);
comment on table public.peer_reports is
  'A participant''s report about the other: the moderators'' queue (JWT app_metadata.role = moderator).';
create index idx_peer_reports_open on public.peer_reports (created_at) where status = 'open';
create index idx_peer_reports_reporter on public.peer_reports (reporter_id);
create index idx_peer_reports_reported on public.peer_reports (reported_id);

do $$
declare
  t text;
begin
  foreach t in array array['peer_rooms', 'peer_requests', 'peer_seats', 'peer_turns', 'peer_turn_keys',
                           'peer_messages', 'peer_feedback', 'peer_blocks', 'peer_reports'] loop
    execute format('create trigger set_updated_at before update on public.%I
                    for each row execute function private.set_updated_at()', t);
  end loop;
end
$$;

-- Checks on what clients write (sizes first, in constant time) -----------------------------------------------

-- A request: sizes, plan, daily count, then role, zone and window; the server sets status and priority.
create function private.check_peer_request() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  no_shows integer;
begin
  if octet_length(new.target_role) > 120 then
    raise sqlstate 'PT422' using message = 'target_role is longer than 120 bytes';
  end if;
  if octet_length(new.timezone) > 64 or not exists (select from private.time_zones z where z.name = new.timezone) then
    raise sqlstate 'PT422' using
      message = format('timezone %L is not an IANA time zone name', left(new.timezone, 64)),
      hint = 'Use a name such as Europe/Paris or America/New_York (pg_timezone_names).';
  end if;
  if not coalesce((select (e.features ->> 'peer_sessions')::boolean from public.entitlements(new.user_id) e), false)
  then
    raise sqlstate 'PT402' using message = 'peer sessions come with a paid plan',
      hint = 'Upgrade to a weekly or monthly plan to practise with peers.';
  end if;
  if (select count(*) from public.peer_requests r
      where r.user_id = new.user_id and r.created_at > now() - interval '1 day') >= 10 then
    raise sqlstate 'PT429' using message = 'at most 10 peer session requests a day',
      hint = 'Keep your waiting request: the matcher pairs it as soon as a peer fits.';
  end if;
  new.target_role := private.canonical_term('role', new.target_role);
  new.available_from := greatest(new.available_from, now());
  if new.available_until > now() + interval '14 days' then
    raise sqlstate 'PT422' using message = 'available_until is more than 14 days ahead';
  end if;
  if new.available_until < new.available_from + interval '1 hour' then
    raise sqlstate 'PT422' using message = 'the time window must hold a one-hour session (from now at the earliest)';
  end if;
  select count(*) into no_shows from public.peer_seats s
  where s.user_id = new.user_id and s.no_show and s.created_at > now() - interval '90 days';
  new.priority_at := now() + make_interval(hours => no_shows);
  new.status := 'waiting';
  new.room_id := null;
  new.created_at := now();
  return new;
end
$$;
create trigger check_peer_request before insert on public.peer_requests
  for each row execute function private.check_peer_request();
create trigger refuse_work_while_deleting before insert on public.peer_requests
  for each row execute function private.refuse_work_while_deleting();

-- The first check-in of a room opens its turns.
create function private.on_peer_check_in() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if not new.no_show then
    perform private.open_peer_turns(new.room_id);
  end if;
  return null;
end
$$;
create trigger open_turns after insert on public.peer_seats
  for each row execute function private.on_peer_check_in();

-- A chat message: bytes first, then 30 a minute a user.
create function private.check_peer_message() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform private.limit_size('a chat message', new.body, 8000);
  if (select count(*) from (select from public.peer_messages m
                            where m.user_id = new.user_id and m.created_at > now() - interval '1 minute'
                            limit 30) recent) >= 30 then
    raise sqlstate 'PT429' using message = 'at most 30 chat messages a minute', hint = 'Wait a moment.';
  end if;
  new.created_at := now();
  return new;
end
$$;
create trigger check_peer_message before insert on public.peer_messages
  for each row execute function private.check_peer_message();
create trigger refuse_work_while_deleting before insert on public.peer_messages
  for each row execute function private.refuse_work_while_deleting();

-- Feedback: the turn's interviewer on its candidate, every criterion of the category rubric scored 1-5; the
-- server fills room, subject, overall score and rubric version, and marks the turn's feedback given.
create function private.check_peer_feedback() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  turn public.peer_turns;
  due timestamptz;
  expected text[];
  unknown text;
begin
  perform private.limit_size('feedback scores', new.scores, 1024);
  perform private.limit_size('a feedback comment', new.comment, 8000);
  select * into turn from public.peer_turns t where t.id = new.turn_id;
  select r.feedback_due_at into due from public.peer_rooms r
  where r.id = turn.room_id and now() >= r.starts_at;
  if turn.id is null or turn.interviewer_id is distinct from new.author_id or turn.candidate_id is null
     or due is null then
    raise sqlstate 'PT404' using message = 'no turn you interviewed in a room that has started';
  end if;
  if now() > due then
    raise sqlstate 'PT409' using message = 'the feedback deadline of this room has passed';
  end if;
  if jsonb_typeof(new.scores) is distinct from 'object' then
    raise sqlstate 'PT422' using message = 'scores must be a JSON object of criterion: 1-5';
  end if;
  select array_agg(c.name order by c.name) into expected from private.rubric_criteria c where c.category = turn.category;
  select string_agg(k, ', ') into unknown from jsonb_object_keys(new.scores) k where k <> all (expected);
  if unknown is not null or (select count(*) from jsonb_object_keys(new.scores)) <> cardinality(expected) then
    raise sqlstate 'PT422' using
      message = format('scores must name exactly the %s criteria', turn.category),
      hint = 'Criteria: ' || array_to_string(expected, ', ') || '.';
  end if;
  if exists (select from jsonb_each(new.scores) s
             where jsonb_typeof(s.value) <> 'number' or s.value::text !~ '^[1-5]$') then
    raise sqlstate 'PT422' using message = 'each score is a whole number from 1 to 5';
  end if;
  new.room_id := turn.room_id;
  new.subject_id := turn.candidate_id;
  new.rubric_version := 'rubric-v1/' || turn.category || '/peer';
  select round(100 * sum(c.weight * ((new.scores ->> c.name)::integer - 1) / 4.0) / sum(c.weight), 2)
    into new.overall_score
  from private.rubric_criteria c where c.category = turn.category;
  update public.peer_turns t set feedback_at = now() where t.id = turn.id;
  return new;
end
$$;
create trigger check_peer_feedback before insert on public.peer_feedback
  for each row execute function private.check_peer_feedback();

create function private.check_peer_report() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform private.limit_size('report details', new.details, 8000);
  new.status := 'open';
  return new;
end
$$;
create trigger check_peer_report before insert on public.peer_reports
  for each row execute function private.check_peer_report();

-- Rooms ---------------------------------------------------------------------------------------------------------

-- Open a room for each pair of waiting requests (a[i] with b[i]; the caller has checked them under the matching
-- lock): its times from the windows' overlap. Seats and turns come at check-in (open_peer_turns).
create function private.open_peer_rooms(a uuid[], b uuid[]) returns integer
language plpgsql
set search_path = ''
as $$
declare
  rooms uuid[] := array(select gen_random_uuid() from generate_series(1, cardinality(a)));
begin
  if cardinality(a) = 0 then
    return 0;
  end if;
  insert into public.peer_rooms (id, target_role, experience_level, user_a, user_b, starts_at, ends_at,
                                 feedback_due_at)
  select p.room_id, ra.target_role, ra.experience_level, ra.user_id, rb.user_id, s.starts_at,
         s.starts_at + interval '1 hour', s.starts_at + interval '1 day'
  from unnest(rooms, a, b) as p(room_id, request_a, request_b)
  join public.peer_requests ra on ra.id = p.request_a
  join public.peer_requests rb on rb.id = p.request_b
  cross join lateral (select greatest(ra.available_from, rb.available_from, now()) as starts_at) s;

  update public.peer_requests r set status = 'matched', room_id = p.room_id
  from unnest(rooms || rooms, a || b) as p(room_id, request_id)
  where r.id = p.request_id;

  return cardinality(rooms);
end
$$;

-- A room's two turns, made when its first participant checks in (so the questions are picked against what the
-- candidates have been served by then, and a missed room costs no keys): turn 1 (user_a interviews user_b), then
-- turn 2 (user_b interviews user_a) on another question, and each interviewer's copy of the key. Once per room
-- (the room's row is locked; both participants checking in at once make them once).
create function private.open_peer_turns(room uuid) returns void
language plpgsql
set search_path = ''
as $$
declare
  r public.peer_rooms;
begin
  select * into r from public.peer_rooms where id = room for update;
  if exists (select from public.peer_turns t where t.room_id = room) then
    return;
  end if;
  for turn_number in 1..2 loop
    insert into public.peer_turns (room_id, turn, interviewer_id, candidate_id, question_id, category)
    select r.id, turn_number, who.interviewer, who.candidate, q.id, coalesce(q.category, 'behavioral')
    from (select case turn_number when 1 then r.user_a else r.user_b end as interviewer,
                 case turn_number when 1 then r.user_b else r.user_a end as candidate) who
    left join lateral (
      select q.id, q.category from public.questions q
      join public.question_answer_keys k on k.question_id = q.id
      where q.is_active and q.provisional_for is null and q.experience_level = r.experience_level
        and (q.target_role is null or q.target_role = r.target_role)
        and not exists (select from public.served_questions s where s.user_id = who.candidate and s.question_id = q.id)
        and not exists (select from public.peer_turns t where t.interviewer_id = who.candidate and t.question_id = q.id)
        and not exists (select from public.peer_turns t where t.candidate_id = who.candidate and t.question_id = q.id)
        and not exists (select from public.peer_turns t where t.room_id = r.id and t.question_id = q.id)
      order by q.rank_score desc, q.id
      limit 1
    ) q on true;
  end loop;

  insert into public.peer_turn_keys (turn_id, interviewer_id, evaluation_criteria, key_points)
  select t.id, t.interviewer_id, k.evaluation_criteria, k.key_points
  from public.peer_turns t
  join public.question_answer_keys k on k.question_id = t.question_id
  where t.room_id = room and t.interviewer_id is not null;
end
$$;

-- A turn's question: the bank's best active, non-provisional question of the room's level and role that its
-- candidate has never been served nor met in a peer turn (so they cannot already hold its key), read in rank
-- order and stopping at the first that fits.
create index idx_questions_peer_pick on public.questions (experience_level, rank_score desc, id)
  where is_active and provisional_for is null;

-- Two waiting requests fit when they are of one class (role, level), of two users neither of whom blocked the
-- other, and their windows share an hour from now on. The condition is written out in each of the three
-- matching queries below (a function would be called row by row: one with a pinned search_path is never
-- inlined, and that made the scheduled run 5x slower); tests/peer checks each.

-- On request: the new request takes the first waiting request of its class in priority order that fits.
-- Matching is serialized per class by advisory locks held to the end of the transaction (shared on the global
-- key, which the scheduled matcher takes exclusively): a concurrent newcomer of the class waits for this one to
-- commit and then sees it, so two newcomers never miss each other; a matcher run holds new requests for its
-- duration (under a second for 10,000 waiting requests: bench/peer.py).
create function private.match_new_peer_request() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  partner uuid;
begin
  perform pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('peer matching'));
  perform pg_catalog.pg_advisory_xact_lock(
    pg_catalog.hashtext('peer matching: ' || new.target_role || ' ' || new.experience_level::text));
  select r.id into partner from public.peer_requests r
  where r.status = 'waiting' and r.target_role = new.target_role and r.experience_level = new.experience_level
    and r.user_id <> new.user_id
    and least(r.available_until, new.available_until) - greatest(r.available_from, new.available_from, now())
        >= interval '1 hour'
    and not exists (select from public.peer_blocks k
                    where (k.blocker_id = r.user_id and k.blocked_id = new.user_id)
                       or (k.blocker_id = new.user_id and k.blocked_id = r.user_id))
  order by r.priority_at, r.id
  limit 1;
  if partner is not null then
    perform private.open_peer_rooms(array[partner], array[new.id]);
  end if;
  return null;
end
$$;
create trigger match_on_request after insert on public.peer_requests
  for each row execute function private.match_new_peer_request();

-- The scheduled matcher, set-based, for waiting requests the on-request match left unpaired (written while its
-- trigger was off, as by a bulk load or a restore; in practice few, since a newcomer always meets the waiting
-- requests of its class). Rounds alternate two ways of pairing within each class (role, level), each pair checked
-- to fit:
--   even rounds: neighbours in priority order, 1st with 2nd, 3rd with 4th... (pairs a class that mostly fits in
--                one statement);
--   odd rounds:  each request proposes to the first later request of its class that fits it; a proposal is taken
--                when it is the earliest one that request receives and its proposer received none (so the oldest
--                request of a class left waiting is always paired if anything fits it).
-- Until two rounds in a row open nothing, or `rounds` have run. It approximates the exact order of the on-request
-- match (take the oldest that fits), which would be one statement per request.
create function service.match_peer_requests(rounds integer default 6) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  total integer := 0;
  opened integer;
  idle integer := 0;
  pairs record;
begin
  if rounds is null or rounds not between 1 and 50 then
    raise sqlstate 'PT422' using message = 'rounds must be between 1 and 50';
  end if;
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('peer matching'));
  for round in 0..rounds - 1 loop
    if round % 2 = 0 then
      with ordered as (
        select r.id, lead(r.id) over w as next_id, row_number() over w as n
        from public.peer_requests r
        where r.status = 'waiting'
        window w as (partition by r.target_role, r.experience_level order by r.priority_at, r.id)
      )
      select array_agg(x.id) as a, array_agg(y.id) as b into pairs
      from ordered o
      join public.peer_requests x on x.id = o.id
      join public.peer_requests y on y.id = o.next_id
      where o.n % 2 = 1 and x.user_id <> y.user_id
        and least(x.available_until, y.available_until) - greatest(x.available_from, y.available_from, now())
            >= interval '1 hour'
        and not exists (select from public.peer_blocks k
                        where (k.blocker_id = x.user_id and k.blocked_id = y.user_id)
                           or (k.blocker_id = y.user_id and k.blocked_id = x.user_id));
    else
      with proposals as (
        select x.id as a, first_fit.id as b, x.priority_at
        from public.peer_requests x
        cross join lateral (
          select y.id from public.peer_requests y
          where y.status = 'waiting' and y.target_role = x.target_role and y.experience_level = x.experience_level
            and (y.priority_at, y.id) > (x.priority_at, x.id) and x.user_id <> y.user_id
            and least(x.available_until, y.available_until) - greatest(x.available_from, y.available_from, now())
                >= interval '1 hour'
            and not exists (select from public.peer_blocks k
                            where (k.blocker_id = x.user_id and k.blocked_id = y.user_id)
                               or (k.blocker_id = y.user_id and k.blocked_id = x.user_id))
          order by y.priority_at, y.id
          limit 1
        ) first_fit
        where x.status = 'waiting'
      ), taken as (
        select distinct on (p.b) p.a, p.b from proposals p
        where not exists (select from proposals q where q.b = p.a)
        order by p.b, p.priority_at, p.a
      )
      -- A proposer received no proposal, so it is nobody's target: the pairs are disjoint.
      select array_agg(t.a) as a, array_agg(t.b) as b into pairs from taken t;
    end if;
    opened := private.open_peer_rooms(coalesce(pairs.a, '{}'), coalesce(pairs.b, '{}'));
    total := total + opened;
    idle := case when opened = 0 then idle + 1 else 0 end;
    exit when idle >= 2;
  end loop;
  return jsonb_build_object('peer_rooms_opened', total);
end
$$;

-- Housekeeping of the scheduled run: waiting requests whose window can no longer hold a session expire; a room
-- 10 minutes past its start is settled: a participant who never checked in gets a no-show seat (it lowers that
-- user's priority for 90 days), the room `missed` if it has one, else `held`.
create function service.settle_peer_rooms(as_of timestamptz default now()) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  due uuid[];
  expired integer;
  settled integer;
  no_shows integer;
begin
  update public.peer_requests r set status = 'expired'
  where r.status = 'waiting' and r.available_until - interval '1 hour' < as_of;
  get diagnostics expired = row_count;

  due := array(select r.id from public.peer_rooms r
                where r.status = 'scheduled' and r.starts_at + interval '10 minutes' <= as_of
                for update);

  insert into public.peer_seats (room_id, user_id, joined_at, no_show)
  select r.id, u, null, true
  from public.peer_rooms r, unnest(array[r.user_a, r.user_b]) u
  where r.id = any (due) and u is not null
    and not exists (select from public.peer_seats s where s.room_id = r.id and s.user_id = u);
  get diagnostics no_shows = row_count;

  update public.peer_rooms r
  set status = case when exists (select from public.peer_seats s where s.room_id = r.id and s.no_show)
                    then 'missed'::public.peer_room_status else 'held' end
  where r.id = any (due);
  get diagnostics settled = row_count;
  return jsonb_build_object('peer_requests_expired', expired, 'peer_rooms_settled', settled,
                            'peer_no_shows_recorded', no_shows);
end
$$;

-- Access --------------------------------------------------------------------------------------------------------

alter table public.peer_rooms enable row level security;
alter table public.peer_requests enable row level security;
alter table public.peer_seats enable row level security;
alter table public.peer_turns enable row level security;
alter table public.peer_turn_keys enable row level security;
alter table public.peer_messages enable row level security;
alter table public.peer_feedback enable row level security;
alter table public.peer_blocks enable row level security;
alter table public.peer_reports enable row level security;

revoke all on public.peer_rooms, public.peer_requests, public.peer_seats, public.peer_turns, public.peer_turn_keys,
  public.peer_messages, public.peer_feedback, public.peer_blocks, public.peer_reports from anon, authenticated;
grant all on public.peer_rooms, public.peer_requests, public.peer_seats, public.peer_turns, public.peer_turn_keys,
  public.peer_messages, public.peer_feedback, public.peer_blocks, public.peer_reports to service_role;

grant select on public.peer_rooms, public.peer_turns, public.peer_turn_keys, public.peer_blocks
  to authenticated;
create policy "peer_rooms: participants read" on public.peer_rooms
  for select to authenticated using ((select auth.uid()) in (user_a, user_b));
create policy "peer_turns: participants read" on public.peer_turns
  for select to authenticated using ((select auth.uid()) in (interviewer_id, candidate_id));
create policy "peer_turn_keys: the interviewer reads" on public.peer_turn_keys
  for select to authenticated using (interviewer_id = (select auth.uid()));

grant select, update (status) on public.peer_requests to authenticated;
grant insert (user_id, target_role, experience_level, available_from, available_until, timezone)
  on public.peer_requests to authenticated;
create policy "peer_requests: read own" on public.peer_requests
  for select to authenticated using (user_id = (select auth.uid()));
create policy "peer_requests: ask for own" on public.peer_requests
  for insert to authenticated with check (user_id = (select auth.uid()));
create policy "peer_requests: cancel own waiting" on public.peer_requests
  for update to authenticated using (user_id = (select auth.uid()) and status = 'waiting')
  with check (user_id = (select auth.uid()) and status = 'cancelled');

grant select, insert (room_id, user_id) on public.peer_seats to authenticated;
create policy "peer_seats: read own" on public.peer_seats
  for select to authenticated using (user_id = (select auth.uid()));
create policy "peer_seats: check in from 15 minutes before the start to the end" on public.peer_seats
  for insert to authenticated with check (
    user_id = (select auth.uid())
    and exists (select from public.peer_rooms r where r.id = room_id and (select auth.uid()) in (r.user_a, r.user_b)
                and now() between r.starts_at - interval '15 minutes' and r.ends_at));

grant select, insert (room_id, user_id, body) on public.peer_messages to authenticated;
create policy "peer_messages: participants read" on public.peer_messages
  for select to authenticated using (
    exists (select from public.peer_rooms r where r.id = room_id and (select auth.uid()) in (r.user_a, r.user_b)));
create policy "peer_messages: participants write during the room" on public.peer_messages
  for insert to authenticated with check (
    user_id = (select auth.uid())
    and exists (select from public.peer_rooms r where r.id = room_id and (select auth.uid()) in (r.user_a, r.user_b)
                and now() between r.starts_at - interval '15 minutes' and r.ends_at + interval '15 minutes'));

grant select, insert (turn_id, author_id, scores, comment) on public.peer_feedback to authenticated;
create policy "peer_feedback: the author, and the candidate once they gave theirs or after the deadline"
  on public.peer_feedback for select to authenticated using (
    author_id = (select auth.uid())
    or (subject_id = (select auth.uid())
        and (exists (select from public.peer_turns t
                     where t.room_id = peer_feedback.room_id and t.interviewer_id = (select auth.uid())
                       and t.feedback_at is not null)
             or exists (select from public.peer_rooms r
                        where r.id = peer_feedback.room_id and r.feedback_due_at <= now()))));
create policy "peer_feedback: the interviewer gives" on public.peer_feedback
  for insert to authenticated with check (author_id = (select auth.uid()));

-- A user blocks or reports only someone they shared a room with.
grant insert (blocker_id, blocked_id) on public.peer_blocks to authenticated;
create policy "peer_blocks: read own" on public.peer_blocks
  for select to authenticated using (blocker_id = (select auth.uid()));
create policy "peer_blocks: block someone met" on public.peer_blocks
  for insert to authenticated with check (
    blocker_id = (select auth.uid())
    and exists (select from public.peer_rooms r
                where (r.user_a, r.user_b) in ((blocker_id, blocked_id), (blocked_id, blocker_id))));

grant select, insert (room_id, reporter_id, reported_id, reason, details), update (status)
  on public.peer_reports to authenticated;
create policy "peer_reports: the reporter and moderators read" on public.peer_reports
  for select to authenticated using (
    reporter_id = (select auth.uid())
    or ((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'moderator');
create policy "peer_reports: report the other participant" on public.peer_reports
  for insert to authenticated with check (
    reporter_id = (select auth.uid())
    and exists (select from public.peer_rooms r
                where r.id = room_id
                  and (r.user_a, r.user_b) in ((reporter_id, reported_id), (reported_id, reporter_id))));
create policy "peer_reports: moderators resolve" on public.peer_reports
  for update to authenticated
  using (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'moderator')
  with check (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'moderator');

-- Realtime: the room's private channel `peer-room:<room id>`, broadcast and presence, for its participants from
-- 15 minutes before the start to 15 minutes after the end (receiving: select; sending: insert).
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

alter publication supabase_realtime add table public.peer_messages;

-- Account export: everything above a user owns (service.export_account as in migration 23, plus the peer_
-- sections). Deleting the account removes it by the foreign keys (see the top of this file).
create or replace function service.export_account(user_id uuid, answers_after jsonb default null, max_bytes integer default 4000000)
returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  uid uuid := export_account.user_id;
  after_at timestamptz := (answers_after ->> 'created_at')::timestamptz;
  after_id uuid := (answers_after ->> 'id')::uuid;
  budget integer := least(greatest(coalesce(max_bytes, 4000000), 10000), 5000000);
  page_rows constant integer := 2000;
  page jsonb;
  last_answer jsonb;
  more boolean;
  result jsonb;
begin
  if not exists (select from public.users u where u.id = uid) then
    raise sqlstate 'PT404' using message = 'no such account';
  end if;
  if answers_after is not null and (after_at is null or after_id is null) then
    raise sqlstate 'PT400' using message = 'the answers cursor needs created_at and id';
  end if;
  -- A page looks at no more than `page_rows` answers of each table past the cursor (their index order), so a page
  -- costs the same however many answers the account has.
  with answers as (
    (select r.created_at, r.id, to_jsonb(r) || jsonb_build_object('archived', false) as doc
     from public.responses r
     where r.user_id = uid and (after_at is null or (r.created_at, r.id) > (after_at, after_id))
     order by r.created_at, r.id limit page_rows + 1)
    union all
    (select a.created_at, a.id, to_jsonb(a) || jsonb_build_object('archived', true)
     from archive.responses a
     where a.user_id = uid and (after_at is null or (a.created_at, a.id) > (after_at, after_id))
     order by a.created_at, a.id limit page_rows + 1)
  ), sized as (
    select doc, created_at, id,
           row_number() over (order by created_at, id) as n,
           sum(octet_length(doc::text)) over (order by created_at, id) - octet_length(doc::text) as before
    from answers
  )
  select coalesce(jsonb_agg(doc order by created_at, id) filter (where before < budget and n <= page_rows), '[]'),
         bool_or(before >= budget or n > page_rows)
  into page, more
  from sized;
  last_answer := page -> (jsonb_array_length(page) - 1);
  result := jsonb_build_object(
    'format', 'interview-prep account export, version 1',
    'user_id', uid,
    'exported_at', now(),
    'answers', page,
    'next', case when coalesce(more, false)
                 then jsonb_build_object('created_at', last_answer -> 'created_at', 'id', last_answer -> 'id') end);
  if answers_after is not null then
    return result;
  end if;
  return result || private.auth_account(uid) || jsonb_build_object(
    'user', (select to_jsonb(u) from public.users u where u.id = uid),
    'profile', (select to_jsonb(p) from public.user_profiles p where p.user_id = uid),
    'billing_customers', (select coalesce(jsonb_agg(to_jsonb(b)), '[]') from public.billing_customers b
                          where b.user_id = uid),
    'subscriptions', (select coalesce(jsonb_agg(to_jsonb(s) order by s.created_at), '[]') from public.subscriptions s
                      where s.user_id = uid),
    'subscription_changes', (select coalesce(jsonb_agg(to_jsonb(c) order by c.occurred_at), '[]')
                             from public.subscription_changes c where c.user_id = uid),
    'usage_counters', (select coalesce(jsonb_agg(to_jsonb(c) order by c.period_start, c.metric), '[]')
                       from public.usage_counters c where c.user_id = uid),
    'sessions', (select coalesce(jsonb_agg(to_jsonb(s) order by s.started_at), '[]') from public.practice_sessions s
                 where s.user_id = uid),
    'session_questions', (select coalesce(jsonb_agg(q.doc order by q.served_at, q.position), '[]')
                          from (select to_jsonb(l) as doc, l.served_at, l.position from public.session_questions l
                                where l.user_id = uid
                                union all
                                select to_jsonb(a), a.served_at, a.position from archive.session_questions a
                                where a.user_id = uid) q),
    'ratings', (select coalesce(jsonb_agg(to_jsonb(r) order by r.created_at), '[]') from public.question_ratings r
                where r.user_id = uid),
    'achievements', (select coalesce(jsonb_agg(to_jsonb(a) order by a.awarded_at), '[]') from public.achievements a
                     where a.user_id = uid),
    'progress', (select coalesce(jsonb_agg(to_jsonb(p) order by p.period_start, p.metric_name), '[]')
                 from public.user_progress p where p.user_id = uid),
    'progress_totals', (select to_jsonb(t) from public.progress_totals t where t.user_id = uid),
    'abilities', (select coalesce(jsonb_agg(to_jsonb(a) order by a.category), '[]') from public.category_abilities a
                  where a.user_id = uid),
    'ai_usage', (select coalesce(jsonb_agg(to_jsonb(a) order by a.created_at), '[]') from public.ai_usage a
                 where a.user_id = uid),
    'provisional_questions', (select coalesce(jsonb_agg(jsonb_build_object('id', q.id, 'content', q.content,
                                                                           'category', q.category,
                                                                           'created_at', q.created_at)), '[]')
                              from public.questions q where q.provisional_for = uid),
    'question_reports', (select coalesce(jsonb_agg(to_jsonb(r) order by r.created_at), '[]')
                         from public.question_reports r where r.user_id = uid),
    'moderation', (select coalesce(jsonb_agg(to_jsonb(t) order by t.id), '[]') from public.question_transitions t
                   where t.moderator_id = uid),
    'recordings', (select coalesce(jsonb_agg(jsonb_build_object('name', o.name, 'created_at', o.created_at,
                                                                'size', o.metadata -> 'size',
                                                                'mimetype', o.metadata -> 'mimetype')
                                             order by o.name), '[]')
                   from storage.objects o
                   where o.bucket_id = 'answers' and o.name like uid::text || '/%'),
    'deletion', private.account_deletion_state(uid) - 'subscriptions' - 'customers',
    'peer_requests', (select coalesce(jsonb_agg(to_jsonb(r) order by r.created_at), '[]') from public.peer_requests r
                      where r.user_id = uid),
    'peer_rooms', (select coalesce(jsonb_agg(to_jsonb(r) order by r.starts_at), '[]') from public.peer_rooms r
                   where uid in (r.user_a, r.user_b)),
    'peer_seats', (select coalesce(jsonb_agg(to_jsonb(s) order by s.created_at), '[]') from public.peer_seats s
                   where s.user_id = uid),
    'peer_turns', (select coalesce(jsonb_agg(to_jsonb(t) order by t.created_at, t.turn), '[]') from public.peer_turns t
                   where uid in (t.interviewer_id, t.candidate_id)),
    -- Their own chat lines (the other participant's are the other's).
    'peer_messages', (select coalesce(jsonb_agg(to_jsonb(m) order by m.id), '[]') from public.peer_messages m
                      where m.user_id = uid),
    -- Feedback given, and feedback received as far as the user may read it yet (the export is no way around
    -- giving one's own first).
    'peer_feedback', (select coalesce(jsonb_agg(to_jsonb(f) order by f.created_at), '[]') from public.peer_feedback f
                      where f.author_id = uid
                         or (f.subject_id = uid
                             and (exists (select from public.peer_turns t where t.room_id = f.room_id
                                            and t.interviewer_id = uid and t.feedback_at is not null)
                                  or exists (select from public.peer_rooms r where r.id = f.room_id
                                               and r.feedback_due_at <= now())))),
    -- Whom they blocked and reported (not who blocked or reported them: that is the others' data).
    'peer_blocks', (select coalesce(jsonb_agg(to_jsonb(k) order by k.created_at), '[]') from public.peer_blocks k
                    where k.blocker_id = uid),
    'peer_reports', (select coalesce(jsonb_agg(to_jsonb(p) order by p.created_at), '[]') from public.peer_reports p
                     where p.reporter_id = uid));
end
$$;

grant execute on function private.open_peer_rooms(uuid[], uuid[]), private.open_peer_turns(uuid),
  service.match_peer_requests(integer), service.settle_peer_rooms(timestamptz) to service_role;
