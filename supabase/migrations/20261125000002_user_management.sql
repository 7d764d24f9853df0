-- 2. User management
--
-- public.users extends auth.users one to one (same id). It is written only by the signup trigger and the
-- user's own profile edits; deleting the auth user deletes it and, by cascade, everything the user owns.
-- public.user_profiles holds the optional career details a user fills in later.

create type public.experience_level as enum ('entry', 'mid', 'senior', 'lead', 'executive');

create table public.users (
  id uuid primary key references auth.users (id) on delete cascade,
  email text,
  provider text not null default 'email',
  provider_id text,
  display_name text check (char_length(display_name) <= 120),
  avatar_url text check (char_length(avatar_url) <= 2048),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.users is 'One row per auth user, created by the signup trigger.';
comment on column public.users.email is 'Copied from auth.users; null for phone and anonymous sign-ins.';

create index idx_users_email on public.users (email);
create index idx_users_provider on public.users (provider, provider_id);

create table public.user_profiles (
  user_id uuid primary key references public.users (id) on delete cascade,
  target_role text check (char_length(target_role) <= 120),
  experience_level public.experience_level,
  skills text[] not null default '{}' check (cardinality(skills) <= 50),
  -- An IANA name; `at time zone` rejects unknown names with a clear error.
  timezone text not null default 'UTC' check ((now() at time zone timezone) is not null),
  preferences jsonb not null default '{}' check (jsonb_typeof(preferences) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.user_profiles is 'Optional career profile; the timezone drives streaks and daily limits.';

create index idx_user_profiles_skills on public.user_profiles using gin (skills);

create trigger set_updated_at before update on public.users
  for each row execute function private.set_updated_at();
create trigger set_updated_at before update on public.user_profiles
  for each row execute function private.set_updated_at();

-- Signup: copy identity fields from auth.users. OAuth providers put the provider's subject and profile in
-- raw_user_meta_data; the provider name is in raw_app_meta_data, which only the auth server writes.
create function private.sync_user_from_auth() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.users as u (id, email, provider, provider_id, display_name, avatar_url)
  values (
    new.id,
    new.email,
    coalesce(new.raw_app_meta_data ->> 'provider', 'email'),
    coalesce(new.raw_user_meta_data ->> 'provider_id', new.raw_user_meta_data ->> 'sub', new.id::text),
    left(coalesce(new.raw_user_meta_data ->> 'full_name', new.raw_user_meta_data ->> 'name'), 120),
    left(coalesce(new.raw_user_meta_data ->> 'avatar_url', new.raw_user_meta_data ->> 'picture'), 2048)
  )
  on conflict (id) do update
    set email = excluded.email,
        provider = excluded.provider,
        provider_id = excluded.provider_id,
        display_name = coalesce(u.display_name, excluded.display_name),
        avatar_url = coalesce(u.avatar_url, excluded.avatar_url);
  return new;
end
$$;
revoke execute on function private.sync_user_from_auth() from public, anon, authenticated;

create trigger on_auth_user_created after insert on auth.users
  for each row execute function private.sync_user_from_auth();
create trigger on_auth_user_updated after update of email, raw_app_meta_data, raw_user_meta_data on auth.users
  for each row execute function private.sync_user_from_auth();

-- Access: a user reads their own row and may change only how they are shown; profiles are fully their own.
alter table public.users enable row level security;
alter table public.user_profiles enable row level security;

revoke all on public.users, public.user_profiles from anon, authenticated;
grant select on public.users to authenticated;
grant update (display_name, avatar_url) on public.users to authenticated;
grant select, insert, update, delete on public.user_profiles to authenticated;
grant all on public.users, public.user_profiles to service_role;

create policy "users: read own row" on public.users
  for select to authenticated using (id = (select auth.uid()));
create policy "users: edit own display fields" on public.users
  for update to authenticated using (id = (select auth.uid())) with check (id = (select auth.uid()));

create policy "user_profiles: read own" on public.user_profiles
  for select to authenticated using (user_id = (select auth.uid()));
create policy "user_profiles: create own" on public.user_profiles
  for insert to authenticated with check (user_id = (select auth.uid()));
create policy "user_profiles: edit own" on public.user_profiles
  for update to authenticated using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));
create policy "user_profiles: delete own" on public.user_profiles
  for delete to authenticated using (user_id = (select auth.uid()));
