-- Tenancy schema: one shared schema, tenant_id on every tenant table, Row-Level Security
-- ENABLED and FORCED. The service connects as the non-owner role voiceai_app and binds the
-- tenant per transaction with set_config('voiceai.tenant_id', ..., true) (= SET LOCAL).
-- current_setting(..., true) is NULL when unset, and NULL matches no row: a query without the
-- tenant setting sees nothing.

CREATE TABLE tenants (
    id           text PRIMARY KEY,
    display_name text NOT NULL,
    plan_tier    smallint NOT NULL DEFAULT 1,
    create_time  timestamptz NOT NULL DEFAULT now(),
    update_time  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agents (
    tenant_id         text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id                text NOT NULL,
    display_name      text NOT NULL DEFAULT '',
    system_prompt     text NOT NULL,
    greeting          text NOT NULL DEFAULT '',
    voice             text NOT NULL DEFAULT '',
    language_code     text NOT NULL DEFAULT '',
    stt_providers     text[] NOT NULL DEFAULT '{}',
    stt_model         text NOT NULL DEFAULT '',
    llm_providers     text[] NOT NULL DEFAULT '{}',
    llm_model         text NOT NULL DEFAULT '',
    tts_providers     text[] NOT NULL DEFAULT '{}',
    tts_model         text NOT NULL DEFAULT '',
    keyterms          text[] NOT NULL DEFAULT '{}',
    max_call_duration_s double precision NOT NULL DEFAULT 0,
    transfer_number   text NOT NULL DEFAULT '',
    revision          bigint NOT NULL DEFAULT 1,
    create_time       timestamptz NOT NULL DEFAULT now(),
    update_time       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE phone_numbers (
    tenant_id   text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id          text NOT NULL,
    e164_number text NOT NULL,
    agent_id    text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents(tenant_id, id) ON DELETE RESTRICT
);
-- A number routes to one tenant across the whole platform (constraints see every row).
CREATE UNIQUE INDEX phone_numbers_e164 ON phone_numbers (e164_number);

CREATE TABLE api_keys (
    tenant_id    text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id           text NOT NULL UNIQUE,
    display_name text NOT NULL DEFAULT '',
    roles        text[] NOT NULL,
    secret_hash  text NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    revoke_time  timestamptz,
    expire_time  timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE calls (
    tenant_id    text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id           text NOT NULL,
    agent_id     text NOT NULL DEFAULT '',
    status       smallint NOT NULL,
    direction    smallint NOT NULL DEFAULT 0,
    from_number  text NOT NULL DEFAULT '',
    to_number    text NOT NULL DEFAULT '',
    start_time   timestamptz,
    end_time     timestamptz,
    end_reason   text NOT NULL DEFAULT '',
    turns        jsonb NOT NULL DEFAULT '[]',
    usage        jsonb NOT NULL DEFAULT '{}',
    seq          bigserial,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX calls_newest ON calls (tenant_id, seq DESC);

CREATE TABLE audit_log (
    tenant_id      text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id             bigserial,
    actor          text NOT NULL,
    action         text NOT NULL,
    resource       text NOT NULL,
    changed_fields text[] NOT NULL DEFAULT '{}',
    create_time    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- Row-Level Security on every tenant table, forced so that even the owner is subject to it.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_self ON tenants
    USING (id = current_setting('voiceai.tenant_id', true)
           OR current_setting('voiceai.platform', true) = 'on')
    WITH CHECK (id = current_setting('voiceai.tenant_id', true)
           OR current_setting('voiceai.platform', true) = 'on');

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['agents', 'phone_numbers', 'api_keys', 'calls', 'audit_log'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (tenant_id = current_setting(''voiceai.tenant_id'', true)) '
            'WITH CHECK (tenant_id = current_setting(''voiceai.tenant_id'', true))', t);
    END LOOP;
END $$;

-- Lookups that must work before the tenant is known (a credential or a called number). They
-- run as the owner (SECURITY DEFINER, search_path pinned) and return only what routing needs;
-- the owner alone has a read policy on these two tables, the app role never does.
CREATE POLICY owner_lookup ON api_keys FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY owner_lookup ON phone_numbers FOR SELECT TO CURRENT_USER USING (true);

CREATE FUNCTION voiceai_lookup_api_key(p_key_id text)
RETURNS TABLE (tenant_id text, roles text[], secret_hash text,
               revoke_time timestamptz, expire_time timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT k.tenant_id, k.roles, k.secret_hash, k.revoke_time, k.expire_time
      FROM api_keys k WHERE k.id = p_key_id $$;

CREATE FUNCTION voiceai_lookup_phone_number(p_e164 text)
RETURNS TABLE (tenant_id text, phone_number_id text, agent_id text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT p.tenant_id, p.id, p.agent_id FROM phone_numbers p WHERE p.e164_number = p_e164 $$;
