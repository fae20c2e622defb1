// The API reference, rendered here from /openapi.json: no script from a CDN, so it works offline.
// Text goes in with textContent only; the schema carries the run's name, which is not ours to trust as HTML.
"use strict";

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function resolve(spec, schema) {
  while (schema && schema.$ref) schema = schema.$ref.split("/").slice(1).reduce((node, key) => node[key], spec);
  return schema || {};
}

// "integer (0 to 296)", "array of number (-1000000 to 1000000) (4 items)": the type and what the server enforces.
function describe(spec, schema) {
  schema = resolve(spec, schema);
  if (schema.anyOf) return schema.anyOf.map((option) => describe(spec, option)).join(" or ");
  let text = schema.enum ? `one of ${schema.enum.join(", ")}` : schema.type || "object";
  if (schema.type === "array") text = `array of ${describe(spec, schema.items)}`;
  const notes = [];
  if ("minimum" in schema || "maximum" in schema) notes.push(`${schema.minimum ?? "−∞"} to ${schema.maximum ?? "∞"}`);
  if ("minItems" in schema && schema.minItems === schema.maxItems) notes.push(`${schema.minItems} items`);
  else if ("minItems" in schema || "maxItems" in schema) notes.push(`${schema.minItems ?? 0} to ${schema.maxItems ?? "any"} items`);
  if ("default" in schema) notes.push(`default ${JSON.stringify(schema.default)}`);
  return notes.length ? `${text} (${notes.join("; ")})` : text;
}

function table(rows) {
  const box = el("table", undefined, "fields");
  for (const cells of rows) {
    const row = box.insertRow();
    cells.forEach((cell) => row.appendChild(el("td", cell)));
  }
  return box;
}

function operation(spec, method, path, op) {
  const panel = el("section", undefined, "panel wide");
  panel.id = `${method}-${path}`.replace(/[^a-z0-9]+/gi, "-");
  panel.appendChild(el("h2", `${method.toUpperCase()} ${path}`));
  panel.appendChild(el("p", op.summary || ""));
  const rows = (op.parameters || []).map((p) =>
    [`${p.name} (${p.in})`, describe(spec, p.schema), p.description || p.schema.description || ""]);
  const body = op.requestBody && resolve(spec, op.requestBody.content["application/json"].schema);
  if (body) {
    const required = new Set(body.required || []);
    for (const [name, field] of Object.entries(body.properties || {})) {
      rows.push([`${name} (JSON body${required.has(name) ? ", required" : ""})`, describe(spec, field),
        resolve(spec, field).description || ""]);
    }
  }
  if (rows.length) panel.appendChild(table(rows));
  const answers = Object.entries(op.responses).map(([code, answer]) => `${code}: ${answer.description}`);
  panel.appendChild(el("p", answers.join(" · "), "muted"));
  return panel;
}

async function main() {
  const spec = await (await fetch("/openapi.json")).json();
  document.getElementById("title").textContent = `${spec.info.title}: API`;
  document.getElementById("description").textContent = spec.info.description || "";
  const box = document.getElementById("operations");
  box.replaceChildren();
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) box.appendChild(operation(spec, method, path, op));
  }
}

main().catch((error) => {
  document.getElementById("operations").replaceChildren(el("p", `could not read /openapi.json: ${error.message}`));
});
