-- Data protection (#14 items 3-5): per-tenant data keys (wrapped by the KEK), sealed call
-- transcripts, tenants' own provider keys (sealed), retention policies, PII redaction per agent.
-- Applies on top of 0001 alone. Every new table has RLS ENABLED and FORCED, tenant by tenant.

CREATE TABLE tenant_data_keys (
    tenant_id   text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    version     integer NOT NULL CHECK (version > 0),
    wrapped     bytea NOT NULL,  -- the data key encrypted by the KEK `kek_id`; never in clear
    kek_id      text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, version)
);

-- Transcripts (the turns' caller and agent texts) are stored sealed here; `turns` then holds
-- '[]'. Rows written before this migration keep their plaintext until rewritten or purged.
ALTER TABLE calls ADD COLUMN turns_sealed bytea;
ALTER TABLE calls ADD COLUMN transcript_purged boolean NOT NULL DEFAULT false;
CREATE INDEX calls_age ON calls (tenant_id, (coalesce(end_time, start_time)));

ALTER TABLE agents ADD COLUMN redact_pii boolean NOT NULL DEFAULT false;

CREATE TABLE provider_keys (
    tenant_id   text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    provider    text NOT NULL,
    key_sealed  bytea NOT NULL,
    base_url    text NOT NULL DEFAULT '',
    fingerprint text NOT NULL,
    last4       text NOT NULL,
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, provider)
);

CREATE TABLE retention_policies (
    tenant_id        text PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    call_record_days integer NOT NULL DEFAULT 0 CHECK (call_record_days >= 0),
    transcript_days  integer NOT NULL DEFAULT 0 CHECK (transcript_days >= 0),
    metadata_only    boolean NOT NULL DEFAULT false,
    update_time      timestamptz NOT NULL DEFAULT now()
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenant_data_keys', 'provider_keys', 'retention_policies'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (tenant_id = current_setting(''voiceai.tenant_id'', true)) '
            'WITH CHECK (tenant_id = current_setting(''voiceai.tenant_id'', true))', t);
    END LOOP;
END $$;
