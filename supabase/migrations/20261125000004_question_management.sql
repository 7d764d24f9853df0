-- 4. Question management
--
-- The question bank doubles as the AI cache: curated questions ship with the seed, generated ones are added
-- by the question engine, and every question is reused across users. Clients read active questions;
-- only the service writes questions and their statistics.

create type public.question_category as enum (
  'behavioral', 'technical', 'situational', 'leadership', 'problem_solving', 'culture_fit'
);
create type public.difficulty as enum ('easy', 'medium', 'hard');
create type public.question_source as enum ('curated', 'ai');

-- Case, punctuation and spacing do not make a question new.
create function private.normalize_question(content text) returns text
language sql immutable parallel safe
set search_path = ''
as $$
  select btrim(regexp_replace(lower(content), '[^[:alnum:]]+', ' ', 'g'))
$$;
grant execute on function private.normalize_question(text) to service_role;

-- How strongly the engine prefers a question: a Bayesian average rating (so one 5-star vote does not beat
-- 200 votes of 4.6), a little popularity, and an exploration bonus that fades as ratings arrive.
-- Stored in questions.rank_score by the scheduled rollup, so selection can walk an index in rank order.
create function private.question_rank(rating_avg numeric, rating_count integer, usage_count bigint)
returns double precision
language sql immutable parallel safe
set search_path = ''
as $$
  select ((10 * 3.5 + coalesce(rating_count, 0) * coalesce(rating_avg, 3.5)) / (10 + coalesce(rating_count, 0)) - 1) / 4
       + 0.1 * least(ln(1 + coalesce(usage_count, 0)) / ln(10001), 1)
       + 0.15 * greatest(0, 1 - coalesce(rating_count, 0) / 10.0)
$$;
grant execute on function private.question_rank(numeric, integer, bigint) to service_role;

create table public.questions (
  id uuid primary key default gen_random_uuid(),
  content text not null check (char_length(content) between 10 and 2000),
  category public.question_category not null,
  difficulty public.difficulty not null,
  experience_level public.experience_level not null,
  -- null: suits any role.
  target_role text check (char_length(target_role) <= 120),
  tags text[] not null default '{}' check (cardinality(tags) <= 20),
  source public.question_source not null,
  -- For AI questions: model, prompt version, the request that caused the generation.
  generation_metadata jsonb not null default '{}' check (jsonb_typeof(generation_metadata) = 'object'),
  is_active boolean not null default true,
  -- Statistics rolled up on a schedule from the append-only records (serving never writes this row).
  usage_count bigint not null default 0 check (usage_count >= 0),
  rating_avg numeric(3, 2) check (rating_avg between 1 and 5),
  rating_count integer not null default 0 check (rating_count >= 0),
  rank_score double precision not null default private.question_rank(null, 0, 0),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.questions is 'Question bank and AI cache, shared by all users.';

-- The answer key of a question, apart from its public face: the evaluator reads it; a user may read it only
-- once they have answered the question (13.).
create table public.question_answer_keys (
  question_id uuid primary key references public.questions (id) on delete cascade,
  -- [{"name": "...", "description": "...", "weight": 0.4}, ...]; weights sum to 1.
  evaluation_criteria jsonb not null default '[]' check (jsonb_typeof(evaluation_criteria) = 'array'),
  key_points text[] not null default '{}',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.question_answer_keys is 'What a good answer covers: evaluation criteria and key points.';

create index idx_questions_usage_count on public.questions (usage_count desc);
create index idx_questions_tags on public.questions using gin (tags);
-- One row per question however it is typed: the md5 of the normalized text is unique. An expression index,
-- not a stored generated column: updating a row with a generated key column takes a key-strength lock,
-- which would make the statistics rollup deadlock with serving (whose foreign keys share-lock the row).
create unique index questions_content_hash_key on public.questions (md5(private.normalize_question(content)));

-- Selection walks a bucket in rank order.
create index idx_questions_bucket_rank on public.questions (category, difficulty, experience_level, rank_score desc)
  where is_active;
-- Near-duplicate detection compares normalized text by trigram similarity.
create index idx_questions_normalized_trgm on public.questions
  using gin (private.normalize_question(content) extensions.gin_trgm_ops);

create trigger set_updated_at before update on public.questions
  for each row execute function private.set_updated_at();
create trigger set_updated_at before update on public.question_answer_keys
  for each row execute function private.set_updated_at();

alter table public.questions enable row level security;
alter table public.question_answer_keys enable row level security;

revoke all on public.questions, public.question_answer_keys from anon, authenticated;
grant select on public.questions to authenticated;
grant all on public.questions, public.question_answer_keys to service_role;

create policy "questions: signed-in users read active questions" on public.questions
  for select to authenticated using (is_active);
