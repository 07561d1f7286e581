-- Usage ledger (issue 17): priced usage lines per call, rollups per tenant x day x agent x
-- component/provider/model/unit, and per-tenant contract prices. Written by
-- tenant_svc/usage_ledger.py inside the transaction that writes the call record.
-- Attribution rule: a call's whole usage goes to the UTC day its end time falls in (see
-- usage_ledger.attribution_day for clock skew). Money is integer micro-dollars.

CREATE TABLE usage_lines (
    tenant_id          text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    call_id            text NOT NULL,
    line_no            integer NOT NULL,
    day                date NOT NULL,
    agent_id           text NOT NULL DEFAULT '',
    turn               integer NOT NULL DEFAULT 0,
    component          text NOT NULL,
    provider           text NOT NULL,
    model              text NOT NULL DEFAULT '',
    key_label          text NOT NULL DEFAULT '',
    unit               text NOT NULL,
    quantity_milli     bigint NOT NULL CHECK (quantity_milli >= 0),
    cost_micros        bigint NOT NULL CHECK (cost_micros >= 0),
    unpriced           boolean NOT NULL DEFAULT false,
    price_book_version text NOT NULL,
    PRIMARY KEY (tenant_id, call_id, line_no)
);

CREATE TABLE usage_rollups (
    tenant_id      text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    day            date NOT NULL,
    agent_id       text NOT NULL DEFAULT '',
    component      text NOT NULL,
    provider       text NOT NULL,
    model          text NOT NULL DEFAULT '',
    unit           text NOT NULL,
    quantity_milli bigint NOT NULL DEFAULT 0,
    cost_micros    bigint NOT NULL DEFAULT 0,
    lines          bigint NOT NULL DEFAULT 0,
    unpriced_lines bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, agent_id, component, provider, model, unit)
);

CREATE TABLE contract_prices (
    tenant_id   text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    component   text NOT NULL,
    provider    text NOT NULL,
    model       text NOT NULL DEFAULT '*',
    unit        text NOT NULL,
    usd         numeric(20, 10) NOT NULL CHECK (usd >= 0),
    per         integer NOT NULL DEFAULT 1 CHECK (per >= 1),
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, component, provider, model, unit)
);

-- Per-agent LLM limits: reply length and the context (prompt) token budget; 0 = default/none.
ALTER TABLE agents
    ADD COLUMN max_tokens integer NOT NULL DEFAULT 0 CHECK (max_tokens >= 0),
    ADD COLUMN context_token_budget integer NOT NULL DEFAULT 0 CHECK (context_token_budget >= 0);

-- ListCalls filters: time range, agent, status; ordered by start time.
CREATE INDEX calls_by_start ON calls (tenant_id, start_time DESC, id);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['usage_lines', 'usage_rollups', 'contract_prices'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (tenant_id = current_setting(''voiceai.tenant_id'', true)) '
            'WITH CHECK (tenant_id = current_setting(''voiceai.tenant_id'', true))', t);
    END LOOP;
END $$;
