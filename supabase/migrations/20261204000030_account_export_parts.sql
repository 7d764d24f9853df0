-- The account export is composed of parts, one per feature that stores user data, instead of one function every
-- such feature had to redefine whole (migrations 16, 21, 22, 23 and 24 each carried a full copy of every earlier
-- section, and a merge that dropped one would have silently left data out of the export).
--
-- A part is a function (uid uuid) returns jsonb: an object of top-level export sections, registered in
-- private.account_export_parts. A feature that adds user data adds its part (function + row) in its own migration
-- and its rollback removes both; service.export_account never changes for it. The export refuses a part that
-- returns anything but an object or repeats a section another part already gave, so two parts can never
-- overwrite each other's data. tests/account/test_export.py checks by the catalog that every table holding user
-- data lands in a section.

create table private.account_export_parts (
  part text primary key check (part ~ '^[a-z][a-z_]{0,62}$'),
  builder regprocedure not null unique,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create trigger set_updated_at before update on private.account_export_parts
  for each row execute function private.set_updated_at();
alter table private.account_export_parts enable row level security;
comment on table private.account_export_parts is
  'The parts service.export_account joins into the first page of an account export: builder(uid uuid) returns a '
  'jsonb object of sections. One row per feature that stores user data; added and removed by that feature''s '
  'migration.';
grant select on private.account_export_parts to service_role;  -- the export runs as the service; parts change by migration only

-- The account, its profile, billing, sessions, progress, AI usage, recordings and a pending deletion (migrations
-- 16 and 21).
create function private.export_part_account(uid uuid) returns jsonb
language sql stable
set search_path = ''
as $$
  select private.auth_account(uid) || jsonb_build_object(
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
    'ai_usage', (select coalesce(jsonb_agg(to_jsonb(a) order by a.created_at), '[]') from public.ai_usage a
                 where a.user_id = uid),
    'provisional_questions', (select coalesce(jsonb_agg(jsonb_build_object('id', q.id, 'content', q.content,
                                                                           'category', q.category,
                                                                           'created_at', q.created_at)), '[]')
                              from public.questions q where q.provisional_for = uid),
    'recordings', (select coalesce(jsonb_agg(jsonb_build_object('name', o.name, 'created_at', o.created_at,
                                                                'size', o.metadata -> 'size',
                                                                'mimetype', o.metadata -> 'mimetype')
                                             order by o.name), '[]')
                   from storage.objects o
                   where o.bucket_id = 'answers' and o.name like uid::text || '/%'),
    'deletion', private.account_deletion_state(uid) - 'subscriptions' - 'customers')
$$;

-- The per-category abilities (migration 22).
create function private.export_part_adaptive_practice(uid uuid) returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
    'abilities', (select coalesce(jsonb_agg(to_jsonb(a) order by a.category), '[]') from public.category_abilities a
                  where a.user_id = uid))
$$;

-- Questions reported, and decisions taken as a moderator (migration 23).
create function private.export_part_question_curation(uid uuid) returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
    'question_reports', (select coalesce(jsonb_agg(to_jsonb(r) order by r.created_at), '[]')
                         from public.question_reports r where r.user_id = uid),
    'moderation', (select coalesce(jsonb_agg(to_jsonb(t) order by t.id), '[]') from public.question_transitions t
                   where t.moderator_id = uid))
$$;

-- Peer requests, rooms, turns, chat, feedback, blocks and reports (migration 24).
create function private.export_part_peer_interviews(uid uuid) returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
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
                     where p.reporter_id = uid))
$$;

grant execute on function private.export_part_account(uuid), private.export_part_adaptive_practice(uuid),
  private.export_part_question_curation(uuid), private.export_part_peer_interviews(uuid) to service_role;

insert into private.account_export_parts (part, builder) values
  ('account', 'private.export_part_account(uuid)'),
  ('adaptive_practice', 'private.export_part_adaptive_practice(uuid)'),
  ('question_curation', 'private.export_part_question_curation(uuid)'),
  ('peer_interviews', 'private.export_part_peer_interviews(uuid)');

-- Everything an account owns, as one JSON document per page. The first page (answers_after null) holds every
-- part's sections; answers (live and archived, oldest first) are paged by size: a page holds answers until their
-- JSON reaches max_bytes (at least one), and `next` is the cursor of the following page (null on the last).
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
  part record;
  sections jsonb;
  repeated text[];
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
  for part in select p.part, p.builder from private.account_export_parts p order by p.part loop
    execute format('select %s($1)', part.builder::regproc) into sections using uid;
    if jsonb_typeof(sections) is distinct from 'object' then
      raise exception 'account export part % returned %, not an object of sections', part.part,
        coalesce(jsonb_typeof(sections), 'null');
    end if;
    repeated := array(select k from jsonb_object_keys(sections) k where result ? k);
    if repeated <> '{}' then
      raise exception 'account export part % repeats sections %', part.part, repeated;
    end if;
    result := result || sections;
  end loop;
  return result;
end
$$;
