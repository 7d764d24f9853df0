-- A user sees and changes only their own practice sessions, served questions and answers (RLS), as PostgREST
-- runs their requests: role authenticated, their JWT's claims in request.jwt.claims, local to the transaction.
begin;
select plan(14);

-- Two users, each with a session, a served question and an answer (written as the migrating role; starting a
-- session may already have served it questions from the bank, so ours goes after them).
insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values
  ('00000000-0000-0000-0000-000000000000', 'a0000000-0000-4000-8000-00000000000a', 'authenticated', 'authenticated',
   'alice@example.test', '{"provider": "email", "providers": ["email"]}', '{}', now(), now()),
  ('00000000-0000-0000-0000-000000000000', 'b0000000-0000-4000-8000-00000000000b', 'authenticated', 'authenticated',
   'bob@example.test', '{"provider": "email", "providers": ["email"]}', '{}', now(), now());
insert into public.questions (id, content, category, difficulty, experience_level, source)
values ('c0000000-0000-4000-8000-00000000000c', 'Tell me about a decision you regret (pgTAP).', 'behavioral', 'easy',
        'entry', 'ai');
insert into public.practice_sessions (id, user_id, session_type)
values ('a1000000-0000-4000-8000-00000000000a', 'a0000000-0000-4000-8000-00000000000a', 'quick'),
       ('b1000000-0000-4000-8000-00000000000b', 'b0000000-0000-4000-8000-00000000000b', 'quick');
insert into public.session_questions (id, session_id, user_id, question_id, position)
values ('a2000000-0000-4000-8000-00000000000a', 'a1000000-0000-4000-8000-00000000000a',
        'a0000000-0000-4000-8000-00000000000a', 'c0000000-0000-4000-8000-00000000000c',
        (select coalesce(max(position), 0) + 1 from public.session_questions
         where session_id = 'a1000000-0000-4000-8000-00000000000a')),
       ('b2000000-0000-4000-8000-00000000000b', 'b1000000-0000-4000-8000-00000000000b',
        'b0000000-0000-4000-8000-00000000000b', 'c0000000-0000-4000-8000-00000000000c',
        (select coalesce(max(position), 0) + 1 from public.session_questions
         where session_id = 'b1000000-0000-4000-8000-00000000000b'));
insert into public.responses (id, session_id, session_question_id, user_id, answer_text)
values ('a3000000-0000-4000-8000-00000000000a', 'a1000000-0000-4000-8000-00000000000a',
        'a2000000-0000-4000-8000-00000000000a', 'a0000000-0000-4000-8000-00000000000a', 'Alice''s answer'),
       ('b3000000-0000-4000-8000-00000000000b', 'b1000000-0000-4000-8000-00000000000b',
        'b2000000-0000-4000-8000-00000000000b', 'b0000000-0000-4000-8000-00000000000b', 'Bob''s answer');

-- Alice, signed in.
set local role authenticated;
set local request.jwt.claims = '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated"}';

select results_eq(
  $$ select id from public.practice_sessions $$,
  $$ values ('a1000000-0000-4000-8000-00000000000a'::uuid) $$,
  'a user sees only their own practice sessions'
);
select results_eq(
  $$ select distinct user_id from public.session_questions $$,
  $$ values ('a0000000-0000-4000-8000-00000000000a'::uuid) $$,
  'a user sees only the questions served to them'
);
select results_eq(
  $$ select id from public.responses $$,
  $$ values ('a3000000-0000-4000-8000-00000000000a'::uuid) $$,
  'a user sees only their own answers'
);
select is_empty(
  $$ select from public.responses where user_id = 'b0000000-0000-4000-8000-00000000000b' $$,
  'asking for another user''s answers by id returns nothing'
);
select is_empty(
  $$ update public.responses set answer_text = 'overwritten' where id = 'b3000000-0000-4000-8000-00000000000b'
     returning id $$,
  'updating another user''s answer touches no row'
);
select results_eq(
  $$ update public.responses set answer_text = 'Alice''s better answer'
     where id = 'a3000000-0000-4000-8000-00000000000a' returning answer_text $$,
  $$ values ('Alice''s better answer'::text) $$,
  'a user revises their own answer in an open session'
);
select throws_ok(
  $$ insert into public.responses (session_id, session_question_id, user_id, answer_text)
     values ('b1000000-0000-4000-8000-00000000000b', 'b2000000-0000-4000-8000-00000000000b',
             'b0000000-0000-4000-8000-00000000000b', 'an answer in Bob''s name') $$,
  '42501', null,
  'a user cannot answer in another user''s session'
);
select throws_ok(
  $$ insert into public.practice_sessions (user_id, session_type)
     values ('b0000000-0000-4000-8000-00000000000b', 'quick') $$,
  '42501', null,
  'a user cannot start a session in another user''s name'
);
select is_empty(
  $$ update public.practice_sessions set status = 'abandoned' where id = 'b1000000-0000-4000-8000-00000000000b'
     returning id $$,
  'a user cannot end another user''s session'
);
select throws_ok(
  $$ delete from public.responses where id = 'a3000000-0000-4000-8000-00000000000a' $$,
  '42501', null,
  'answers cannot be deleted through the API, not even one''s own'
);
select throws_ok(
  $$ insert into public.session_questions (session_id, user_id, question_id, position)
     values ('a1000000-0000-4000-8000-00000000000a', 'a0000000-0000-4000-8000-00000000000a',
             'c0000000-0000-4000-8000-00000000000c', 99) $$,
  '42501', null,
  'a user cannot serve themselves questions: only start_session and the service do'
);

-- Bob sees his own rows and nothing of Alice's.
set local request.jwt.claims = '{"sub": "b0000000-0000-4000-8000-00000000000b", "role": "authenticated"}';
select results_eq(
  $$ select answer_text from public.responses $$,
  $$ values ('Bob''s answer'::text) $$,
  'the other user sees only their own answer, unchanged'
);

-- A visitor without a session.
set local role anon;
set local request.jwt.claims = '{"role": "anon"}';
select throws_ok($$ select from public.practice_sessions $$, '42501', null, 'anon cannot read practice sessions');
select throws_ok($$ select from public.responses $$, '42501', null, 'anon cannot read answers');

select * from finish();
rollback;
