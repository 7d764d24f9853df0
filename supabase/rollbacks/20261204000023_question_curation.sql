-- Undo 23. Questions keep their current text and is_active (under_review becomes inactive as it was); their
-- versions, reports, transitions and answer statistics are dropped; 13.'s promotion by the rollup returns.
drop function service.import_questions(jsonb, text);
drop function service.export_questions(public.question_status);
drop function service.moderate_question(uuid, public.question_status, text, text);
drop function service.question_detail(uuid);
drop function service.question_queue(integer);
drop function service.curate_questions(timestamptz);
delete from private.rollup_watermarks where name = 'question_curation';

create function private.promote_provisional_questions() returns integer
language sql
set search_path = ''
as $$
  with promoted as (
    update public.questions q set provisional_for = null
    where q.provisional_for is not null
      and exists (select from public.session_questions sq
                  where sq.question_id = q.id and sq.user_id = q.provisional_for)
      and not exists (select from public.question_ratings r where r.question_id = q.id and r.rating < 3)
    returning 1
  )
  select count(*)::integer from promoted
$$;

revoke all on function private.promote_provisional_questions() from public, anon, authenticated;
grant execute on function private.promote_provisional_questions() to service_role;

create or replace function service.rollup_question_stats() returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  started timestamptz := now();
  since timestamptz;
  touched integer;
begin
  select w.processed_until - interval '10 minutes' into since
  from private.rollup_watermarks w where w.name = 'question_stats' for update;
  since := coalesce(since, '-infinity');

  with changed as (
    select sq.question_id as id from public.session_questions sq where sq.served_at >= since
    union
    select r.question_id from public.question_ratings r where r.updated_at >= since
  ), stats as (
    select c.id,
           (select count(*) from public.session_questions sq where sq.question_id = c.id)
             + (select count(*) from archive.session_questions sq where sq.question_id = c.id) as usage_count,
           (select round(avg(r.rating), 2) from public.question_ratings r where r.question_id = c.id) as rating_avg,
           (select count(*) from public.question_ratings r where r.question_id = c.id)::integer as rating_count
    from changed c
  )
  update public.questions q
  set usage_count = s.usage_count, rating_avg = s.rating_avg, rating_count = s.rating_count,
      rank_score = private.question_rank(s.rating_avg, s.rating_count, s.usage_count)
  from stats s
  where q.id = s.id
    and (q.usage_count, q.rating_avg, q.rating_count) is distinct from (s.usage_count, s.rating_avg, s.rating_count);
  get diagnostics touched = row_count;

  insert into private.rollup_watermarks (name, processed_until) values ('question_stats', started)
  on conflict (name) do update set processed_until = excluded.processed_until;
  return jsonb_build_object('questions_updated', touched, 'since', since,
                            'questions_promoted', private.promote_provisional_questions());
end
$$;

-- The export as in 22.
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
    'recordings', (select coalesce(jsonb_agg(jsonb_build_object('name', o.name, 'created_at', o.created_at,
                                                                'size', o.metadata -> 'size',
                                                                'mimetype', o.metadata -> 'mimetype')
                                             order by o.name), '[]')
                   from storage.objects o
                   where o.bucket_id = 'answers' and o.name like uid::text || '/%'),
    'deletion', private.account_deletion_state(uid) - 'subscriptions' - 'customers');
end
$$;


drop view public.question_review_queue;
drop policy "questions: signed-in users read the shared bank and their provisional questions; moderators all"
  on public.questions;
create policy "questions: signed-in users read the shared bank and their provisional questions" on public.questions
  for select to authenticated
  using (is_active and (provisional_for is null or provisional_for = (select auth.uid())));
revoke select (status, version) on public.questions from authenticated;

drop table private.question_score_stats;
drop trigger audit_direct_status_change on public.questions;
drop function private.audit_direct_status_change();
drop table public.question_transitions;
drop function private.apply_question_transition();
drop table public.question_reports;
drop function private.check_question_report();
drop type public.question_report_reason;

drop trigger record_served_version on public.session_questions;
drop function private.record_served_version();
alter table archive.session_questions drop column question_version;
alter table public.session_questions drop column question_version;
drop trigger record_question_version on public.questions;
drop function private.record_question_version();
drop table public.question_versions;

drop trigger keep_question_state on public.questions;
drop function private.keep_question_state();
drop index public.idx_questions_status;
alter table public.questions drop column version, drop column status;
drop type public.question_status;
