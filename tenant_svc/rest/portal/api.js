// The portal's only way to the platform: the same REST API everyone gets, with the credential
// in the Authorization header (kept in this tab's sessionStorage; no cookie, so no CSRF).

const KEY = "voiceai.session";

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export function loadSession() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || "null");
  } catch {
    return null;
  }
}

export function saveSession(session) {
  if (session) sessionStorage.setItem(KEY, JSON.stringify(session));
  else sessionStorage.removeItem(KEY);
}

export async function call(session, method, path, { query, body, tenantHeader } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const headers = { authorization: `Bearer ${session.credential}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (tenantHeader) headers["x-tenant-id"] = session.tenant;
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : {};
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// The roles a credential carries: a JWT says so in its payload; an API key's own record says so
// (reading it needs the admin role, so a key that may not read itself is treated as read-only).
export async function rolesOf(session) {
  const parts = session.credential.split(".");
  if (parts.length === 3) {
    const payload = JSON.parse(atob(parts[1].replace(/-/g, "+").replace(/_/g, "/")));
    const roles = payload.roles || payload["https://voiceai/roles"] || [];
    const tenant = payload.tenant_id || payload["https://voiceai/tenant_id"] || session.tenant;
    return { roles, tenant };
  }
  const match = /^vai_([a-z2-7]{12})_/.exec(session.credential);
  if (!match) throw new ApiError(400, { message: "That is neither a token nor an API key (vai_...)." });
  try {
    const key = await call(session, "GET", `/v1/tenants/${encodeURIComponent(session.tenant)}/apiKeys/${match[1]}`);
    return { roles: key.roles || [], tenant: session.tenant };
  } catch (e) {
    if (e.status === 403) {
      await call(session, "GET", `/v1/tenants/${encodeURIComponent(session.tenant)}/agents`, { query: { pageSize: 1 } });
      return { roles: ["viewer"], tenant: session.tenant };
    }
    throw e;
  }
}
