// One function per page. Each reads through the REST API and renders with dom.js; write
// controls are only built for a session that may write (RBAC still decides on the server).
import { call } from "./api.js";
import { field, h, show, table } from "./dom.js";

const enc = encodeURIComponent;
const idOf = (name) => name.split("/").pop();
const when = (ts) => (ts ? new Date(ts).toLocaleString() : "");
const list = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

function parent(s) {
  return `/v1/tenants/${enc(s.tenant)}`;
}

function pager(token, go) {
  return token ? h("button", { type: "button", onclick: () => go(token), text: "Next page" }) : null;
}

export async function agents(s, main, token = "") {
  const page = await call(s, "GET", `${parent(s)}/agents`, { query: { pageSize: 20, pageToken: token } });
  const rows = (page.agents || []).map((a) =>
    h(
      "tr",
      {},
      h("td", {}, h("a", { href: `#/agents/${enc(idOf(a.name))}`, text: idOf(a.name) })),
      h("td", { text: a.displayName || "" }),
      h("td", { text: a.greeting || "" }),
      h("td", { text: a.voice || "" }),
      h("td", { text: a.revision || "" }),
    ),
  );
  show(
    main,
    h("h2", { text: "Agents" }),
    s.canWrite ? h("p", {}, h("a", { class: "button", href: "#/agents/new", text: "New agent" })) : null,
    table("Agents", ["Agent", "Display name", "Greeting", "Voice", "Revision"], rows),
    rows.length ? null : h("p", { text: "No agents yet." }),
    pager(page.nextPageToken, (t) => agents(s, main, t)),
  );
}

const AGENT_FIELDS = [
  ["displayName", "Display name", "text"],
  ["systemPrompt", "Prompt (the LLM's instructions)", "textarea"],
  ["greeting", "Greeting (spoken when a call starts)", "text"],
  ["voice", "Voice", "text"],
  ["languageCode", "Language (BCP-47, e.g. en-US)", "text"],
  ["sttProviders", "Speech-to-text providers, in fallback order (comma-separated)", "list"],
  ["llmProviders", "LLM providers (comma-separated)", "list"],
  ["ttsProviders", "Text-to-speech providers (comma-separated)", "list"],
  ["keyterms", "Key terms (comma-separated)", "list"],
  ["transferNumber", "Transfer number (E.164)", "text"],
];

export async function agentForm(s, main, id, go) {
  const creating = id === "new";
  const agent = creating ? {} : await call(s, "GET", `${parent(s)}/agents/${enc(id)}`);
  const readOnly = !s.canWrite;
  const inputs = {};
  const fields = AGENT_FIELDS.map(([key, label, kind]) => {
    const value = kind === "list" ? (agent[key] || []).join(", ") : agent[key] || "";
    const input =
      kind === "textarea"
        ? h("textarea", { name: key, rows: 6, readonly: readOnly })
        : h("input", { name: key, type: "text", readonly: readOnly });
    input.value = value;
    inputs[key] = [input, kind, value];
    return field(label, input);
  });
  const idInput = h("input", { name: "agentId", type: "text", pattern: "[a-z][a-z0-9-]{0,62}", required: true });
  const form = h(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        const body = {};
        const mask = [];
        for (const [key, [input, kind, before]] of Object.entries(inputs)) {
          if (!creating && input.value === before) continue;
          body[key] = kind === "list" ? list(input.value) : input.value;
          mask.push(key);
        }
        if (creating) {
          await call(s, "POST", `${parent(s)}/agents`, { query: { agentId: idInput.value }, body });
          go("#/agents", "Agent created.");
        } else if (mask.length) {
          await call(s, "PATCH", `${parent(s)}/agents/${enc(id)}`, { query: { updateMask: mask.join(",") }, body });
          go(`#/agents/${enc(id)}`, "Agent saved.");
        }
      },
    },
    creating ? field("Agent id (lowercase letters, digits, hyphens)", idInput) : null,
    fields,
    readOnly ? null : h("button", { type: "submit", text: creating ? "Create agent" : "Save" }),
  );
  const remove =
    !creating && s.canWrite
      ? h("button", {
          type: "button",
          class: "danger",
          text: "Delete agent",
          onclick: async () => {
            if (!confirm(`Delete agent ${id}?`)) return;
            await call(s, "DELETE", `${parent(s)}/agents/${enc(id)}`);
            go("#/agents", "Agent deleted.");
          },
        })
      : null;
  const meta = creating ? null : h("p", { text: `Revision ${agent.revision || ""}, updated ${when(agent.updateTime)}` });
  show(main, h("h2", { text: creating ? "New agent" : `Agent ${id}` }), meta, form, remove, creating || !s.canCall ? null : trial(s, id));
}

// "Test this agent": the caller's words go in as text (spoken by the platform's local voice),
// through a real call; the agent's reply comes back as audio with the transcript and latencies.
function trial(s, id) {
  const words = h("textarea", { name: "callerText", rows: 2, maxlength: 500, required: true });
  words.value = "Hello, what can you do for me?";
  const result = h("div", { "aria-live": "polite" });
  const button = h("button", { type: "submit", text: "Call the agent" });
  const form = h(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        button.disabled = true;
        result.replaceChildren(h("p", { text: "Calling… (the call runs in real time)" }));
        try {
          const r = await call(s, "POST", "/portal/api/test-call", { body: { agent: id, text: words.value }, tenantHeader: true });
          const bytes = Uint8Array.from(atob(r.audioWav), (c) => c.charCodeAt(0));
          const audio = h("audio", { controls: true, src: URL.createObjectURL(new Blob([bytes], { type: "audio/wav" })) });
          const lines = r.transcript.map((t) => h("li", {}, h("strong", { text: `${t.speaker}: ` }), t.text, t.interrupted ? " (interrupted)" : ""));
          const turns = r.turns.map((t) => h("li", { text: `turn ${t.turn}: STT final ${t.stt_final_ms ?? "-"} ms, LLM first token ${t.llm_first_token_ms ?? "-"} ms, TTS first audio ${t.tts_first_audio_ms ?? "-"} ms, first audio out ${t.first_audio_out_ms ?? "-"} ms` }));
          result.replaceChildren(
            r.error ? h("p", { role: "alert", text: `The call failed: ${r.error}` }) : null,
            audio,
            h("ol", { class: "transcript" }, lines),
            h("ul", {}, turns),
            r.callId ? h("p", {}, h("a", { href: `#/calls/${enc(r.callId)}`, text: "Open the call record" })) : null,
          );
        } finally {
          button.disabled = false;
        }
      },
    },
    field("What the caller says", words),
    button,
  );
  return h("section", { "aria-label": "Test this agent" }, h("h3", { text: "Test this agent" }), form, result);
}

export async function numbers(s, main, go) {
  const page = await call(s, "GET", `${parent(s)}/phoneNumbers`, { query: { pageSize: 100 } });
  const rows = (page.phoneNumbers || []).map((p) =>
    h(
      "tr",
      {},
      h("td", { text: p.e164Number }),
      h("td", { text: idOf(p.agent || "") }),
      h(
        "td",
        {},
        s.canWrite
          ? h("button", {
              type: "button",
              text: "Delete",
              "aria-label": `Delete ${p.e164Number}`,
              onclick: async () => {
                await call(s, "DELETE", `/v1/${p.name}`);
                go("#/numbers", "Number deleted.");
              },
            })
          : null,
      ),
    ),
  );
  let form = null;
  if (s.canWrite) {
    const choices = await call(s, "GET", `${parent(s)}/agents`, { query: { pageSize: 200 } });
    const number = h("input", { type: "tel", name: "e164Number", required: true, placeholder: "+14155550123" });
    const agent = h("select", { name: "agent", required: true }, (choices.agents || []).map((a) => h("option", { value: a.name, text: idOf(a.name) })));
    form = h(
      "form",
      {
        onsubmit: async (event) => {
          event.preventDefault();
          await call(s, "POST", `${parent(s)}/phoneNumbers`, { body: { e164Number: number.value, agent: agent.value } });
          go("#/numbers", "Number added.");
        },
      },
      h("h3", { text: "Add a number" }),
      field("Number (E.164)", number),
      field("Agent that answers", agent),
      h("button", { type: "submit", text: "Add number" }),
    );
  }
  show(main, h("h2", { text: "Phone numbers" }), table("Phone numbers", ["Number", "Agent", ""], rows), form);
}

export async function keys(s, main, go, secret = "") {
  const page = await call(s, "GET", `${parent(s)}/apiKeys`, { query: { pageSize: 100 } });
  const rows = (page.apiKeys || []).map((k) =>
    h(
      "tr",
      {},
      h("td", { text: k.displayName || "" }),
      h("td", { text: k.keyPrefix || idOf(k.name) }),
      h("td", { text: (k.roles || []).join(", ") }),
      h("td", { text: when(k.createTime) }),
      h(
        "td",
        {},
        k.revokeTime
          ? `Revoked ${when(k.revokeTime)}`
          : h("button", {
              type: "button",
              text: "Revoke",
              "aria-label": `Revoke ${k.displayName || idOf(k.name)}`,
              onclick: async () => {
                await call(s, "POST", `/v1/${k.name}:revoke`, { body: {} });
                keys(s, main, go);
              },
            }),
      ),
    ),
  );
  const label = h("input", { type: "text", name: "displayName" });
  const roles = ["admin", "agent", "viewer"].map((r) => h("input", { type: "checkbox", name: "roles", value: r, id: `role-${r}` }));
  const form = h(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        const chosen = roles.filter((r) => r.checked).map((r) => r.value);
        const made = await call(s, "POST", `${parent(s)}/apiKeys`, { body: { displayName: label.value, roles: chosen } });
        keys(s, main, go, made.key);
      },
    },
    h("h3", { text: "Create an API key" }),
    field("Name", label),
    h("fieldset", {}, h("legend", { text: "Roles" }), roles.map((r) => h("span", {}, r, h("label", { for: r.id, text: r.value })))),
    h("button", { type: "submit", text: "Create key" }),
  );
  const shown = secret
    ? h(
        "section",
        { class: "secret", "aria-label": "New key" },
        h("p", { text: "Copy this key now: it is shown only once." }),
        h("output", { id: "new-key", text: secret }),
      )
    : null;
  show(main, h("h2", { text: "API keys" }), shown, table("API keys", ["Name", "Prefix", "Roles", "Created", ""], rows), form);
}

export async function calls(s, main, token = "", filters = {}) {
  const page = await call(s, "GET", `${parent(s)}/calls`, { query: { pageSize: 50, pageToken: token } });
  const status = h("select", { name: "status" }, ["", "CALL_STATUS_COMPLETED", "CALL_STATUS_FAILED", "CALL_STATUS_IN_PROGRESS"].map((v) => h("option", { value: v, text: v ? v.replace("CALL_STATUS_", "").toLowerCase() : "any" })));
  const agent = h("input", { type: "text", name: "agent" });
  status.value = filters.status || "";
  agent.value = filters.agent || "";
  const shown = (page.calls || []).filter(
    (c) => (!filters.status || c.status === filters.status) && (!filters.agent || idOf(c.agent || "").includes(filters.agent)),
  );
  const rows = shown.map((c) =>
    h(
      "tr",
      {},
      h("td", {}, h("a", { href: `#/calls/${enc(idOf(c.name))}`, text: idOf(c.name) })),
      h("td", { text: idOf(c.agent || "") }),
      h("td", { text: (c.status || "").replace("CALL_STATUS_", "").toLowerCase() }),
      h("td", { text: (c.direction || "").replace("CALL_DIRECTION_", "").toLowerCase() }),
      h("td", { text: when(c.startTime) }),
      h("td", { text: c.endReason || "" }),
    ),
  );
  const form = h(
    "form",
    { class: "filters", onsubmit: (e) => { e.preventDefault(); calls(s, main, token, { status: status.value, agent: agent.value }); } },
    field("Status", status),
    field("Agent", agent),
    h("button", { type: "submit", text: "Filter" }),
  );
  show(main, h("h2", { text: "Calls" }), form, table("Calls on this page", ["Call", "Agent", "Status", "Direction", "Started", "End reason"], rows), pager(page.nextPageToken, (t) => calls(s, main, t, filters)));
}

const ms = (v) => (v ? `${Math.round(v)} ms` : "");

export async function callDetail(s, main, id) {
  const c = await call(s, "GET", `${parent(s)}/calls/${enc(id)}`);
  const rows = (c.turns || []).map((t) =>
    h(
      "tr",
      {},
      h("td", { text: t.index || 0 }),
      h("td", { text: t.callerText || "" }),
      h("td", {}, t.agentText || "", t.interrupted ? h("strong", { class: "interrupted", text: " (interrupted)" }) : null),
      h("td", { text: ms(t.sttFinalMs) }),
      h("td", { text: ms(t.llmFirstTokenMs) }),
      h("td", { text: ms(t.ttsFirstAudioMs) }),
      h("td", { text: ms(t.firstAudioOutMs) }),
    ),
  );
  show(
    main,
    h("h2", { text: `Call ${id}` }),
    h(
      "dl",
      {},
      h("dt", { text: "Agent" }), h("dd", { text: idOf(c.agent || "") }),
      h("dt", { text: "Status" }), h("dd", { text: c.status || "" }),
      h("dt", { text: "From / to" }), h("dd", { text: `${c.fromNumber || "-"} / ${c.toNumber || "-"}` }),
      h("dt", { text: "Started / ended" }), h("dd", { text: `${when(c.startTime)} / ${when(c.endTime)}` }),
      h("dt", { text: "End reason" }), h("dd", { text: c.endReason || "" }),
      h("dt", { text: "Usage" }), h("dd", { text: Object.entries(c.usage || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "-" }),
    ),
    table("Transcript with per-turn latency (from the end of the caller's speech)", ["Turn", "Caller", "Agent", "STT final", "LLM first token", "TTS first audio", "First audio out"], rows),
  );
}

export async function audit(s, main, token = "") {
  const page = await call(s, "GET", `${parent(s)}/auditLogEntries`, { query: { pageSize: 50, pageToken: token } });
  const rows = (page.auditLogEntries || []).map((e) =>
    h("tr", {}, h("td", { text: when(e.createTime) }), h("td", { text: e.actor || "" }), h("td", { text: e.action || "" }), h("td", { text: e.resource || "" }), h("td", { text: (e.changedFields || []).join(", ") })),
  );
  show(main, h("h2", { text: "Audit log" }), table("Audit log", ["When", "Who", "What", "Resource", "Fields"], rows), pager(page.nextPageToken, (t) => audit(s, main, t)));
}
