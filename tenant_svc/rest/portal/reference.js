// Renders /openapi.json as a reference page, locally (no CDN): operations by tag, parameters,
// request and response schemas.
import { h, table } from "./dom.js";

const refName = (ref) => ref.split("/").pop();

function schemaText(schema) {
  if (!schema) return "";
  if (schema.$ref) return refName(schema.$ref);
  if (schema.allOf) return schema.allOf.map(schemaText).join(" & ");
  if (schema.type === "array") return `${schemaText(schema.items)}[]`;
  if (schema.enum) return schema.enum.join(" | ");
  return schema.format ? `${schema.type} (${schema.format})` : schema.type || "any";
}

function schemaLink(schema) {
  const text = schemaText(schema);
  const ref = schema && (schema.$ref || (schema.allOf && schema.allOf[0].$ref) || (schema.items && schema.items.$ref));
  return ref ? h("a", { href: `#schema-${refName(ref)}`, text }) : text;
}

function operation(path, verb, op) {
  const params = (op.parameters || []).map((p) =>
    h("tr", {}, h("td", {}, h("code", { text: p.name })), h("td", { text: p.in }), h("td", {}, schemaLink(p.schema)), h("td", { text: p.description || "" })),
  );
  const body = op.requestBody && op.requestBody.content["application/json"].schema;
  const ok = op.responses["200"];
  return h(
    "section",
    { class: "op", id: `op-${op.operationId}` },
    h("h3", {}, h("span", { class: "verb", text: verb.toUpperCase() }), h("code", { text: path })),
    h("p", { text: op.description || op.summary || "" }),
    params.length ? table("Parameters", ["Name", "In", "Type", "Description"], params) : null,
    body ? h("p", {}, "Body: ", schemaLink(body)) : null,
    h("p", {}, "Response: ", schemaLink(Object.values(ok.content)[0].schema), " · errors: ", h("a", { href: "#schema-google.rpc.Status", text: "google.rpc.Status" })),
  );
}

function schemaSection(name, schema) {
  const rows = Object.entries(schema.properties || {}).map(([prop, s]) =>
    h("tr", {}, h("td", {}, h("code", { text: prop })), h("td", {}, schemaLink(s)), h("td", { text: `${s.readOnly ? "Output only. " : ""}${s.description || ""}` })),
  );
  return h(
    "section",
    { id: `schema-${name}` },
    h("h3", { text: name }),
    h("p", { text: schema.description || (schema.enum ? schema.enum.join(", ") : "") }),
    rows.length ? table(`${name} fields`, ["Field", "Type", "Description"], rows) : null,
  );
}

async function render() {
  const main = document.getElementById("main");
  const spec = await (await fetch("/openapi.json")).json();
  const ops = [];
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [verb, op] of Object.entries(item)) ops.push([op.tags[0], path, verb, op]);
  }
  const sections = spec.tags.map((tag) =>
    h("section", {}, h("h2", { text: tag.name }), h("p", { text: tag.description }), ops.filter((o) => o[0] === tag.name).map(([, p, v, op]) => operation(p, v, op))),
  );
  main.replaceChildren(
    h("p", { text: spec.info.description }),
    ...sections,
    h("h2", { text: "Schemas" }),
    ...Object.entries(spec.components.schemas).map(([n, s]) => schemaSection(n, s)),
  );
}

render();
