-- Undo 14: back to migration 1's global revocation of EXECUTE from PUBLIC.
alter default privileges revoke execute on functions from public;
drop event trigger revoke_public_execute;
drop function private.revoke_public_execute();
