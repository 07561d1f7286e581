// The portal's shell: sign-in, the hash router, status and error messages.
import { ApiError, loadSession, rolesOf, saveSession } from "./api.js";
import { field, h, show } from "./dom.js";
import * as views from "./views.js";

const main = document.getElementById("main");
const statusLine = document.getElementById("status");
const alertLine = document.getElementById("alert");
let session = loadSession();
let pending = ""; // the message for the page a write leads to; shown once

function go(hash, message = "") {
  pending = message;
  if (location.hash === hash) route();
  else location.hash = hash;
}

function signIn() {
  const tenant = h("input", { type: "text", name: "tenant", autocomplete: "organization" });
  const credential = h("input", { type: "password", name: "credential", required: true, autocomplete: "off" });
  const form = h(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        await start({ credential: credential.value.trim(), tenant: tenant.value.trim() });
      },
    },
    field("Tenant id", tenant, "Not needed with a token that names its tenant."),
    field("API key or token", credential, "An API key (vai_…) or a token from your identity provider."),
    h("button", { type: "submit", text: "Sign in" }),
  );
  show(main, h("h2", { text: "Sign in" }), form);
}

async function start(candidate) {
  try {
    const { roles, tenant } = await rolesOf(candidate);
    if (!tenant) throw new ApiError(400, { message: "Give the tenant id: this credential does not name one." });
    session = { ...candidate, tenant, roles, canWrite: roles.includes("admin") || roles.includes("platform"), canCall: roles.includes("admin") || roles.includes("agent") };
    saveSession(session);
    alertLine.textContent = "";
    go("#/agents");
  } catch (e) {
    alertLine.textContent = `Sign-in failed: ${e.message}`;
  }
}

function chrome() {
  const signedIn = Boolean(session);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("signout").hidden = !signedIn;
  for (const link of document.querySelectorAll("[data-admin]")) link.hidden = !(session && session.canWrite);
  document.getElementById("who").textContent = signedIn
    ? `Tenant ${session.tenant} · ${session.roles.join(", ") || "no roles"}${session.canWrite ? "" : " (read-only)"}`
    : "";
}

async function route() {
  chrome();
  if (!session) return signIn();
  const [, page, id] = location.hash.split("/");
  alertLine.textContent = "";
  statusLine.textContent = pending;
  pending = "";
  try {
    if (page === "agents" && id) await views.agentForm(session, main, decodeURIComponent(id), go);
    else if (page === "numbers") await views.numbers(session, main, go);
    else if (page === "keys") await views.keys(session, main, go);
    else if (page === "calls" && id) await views.callDetail(session, main, decodeURIComponent(id));
    else if (page === "calls") await views.calls(session, main);
    else if (page === "audit") await views.audit(session, main);
    else await views.agents(session, main);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      session = null;
      saveSession(null);
      alertLine.textContent = "Your credential was refused; sign in again.";
      return route();
    }
    alertLine.textContent = e.message;
  }
}

// Errors from form handlers (a refused write) land here and are shown, not swallowed.
window.addEventListener("unhandledrejection", (event) => {
  alertLine.textContent = event.reason && event.reason.message ? event.reason.message : String(event.reason);
});
document.getElementById("signout").addEventListener("click", () => {
  session = null;
  saveSession(null);
  go("#/");
});
window.addEventListener("hashchange", route);

// A dev sign-in link carries the credential in the fragment (never sent to any server).
const fragment = new URLSearchParams(location.hash.startsWith("#token=") ? location.hash.slice(1) : "");
if (fragment.get("token")) {
  history.replaceState(null, "", location.pathname);
  start({ credential: fragment.get("token"), tenant: fragment.get("tenant") || "" });
} else {
  route();
}
