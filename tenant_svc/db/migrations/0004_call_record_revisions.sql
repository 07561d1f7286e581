-- Durable call records (issue 15): the gateway writes a call's record several times (during the
-- call and at its end, replayed from its outbox after a crash). Each write carries a revision;
-- only a newer revision replaces the stored record, so replays are harmless.
ALTER TABLE calls ADD COLUMN IF NOT EXISTS record_revision bigint NOT NULL DEFAULT 0;
-- RLS on calls stays enabled and forced (0001); adding a column does not change it.
ALTER TABLE calls FORCE ROW LEVEL SECURITY;
