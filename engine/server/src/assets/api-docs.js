// Renders /api/v1/openapi.json as a list of operations grouped by tag.
// Text only (textContent), never HTML from the document.

const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
};

const response = await fetch("/api/v1/openapi.json");
const spec = await response.json();
const byTag = new Map();
for (const [path, item] of Object.entries(spec.paths ?? {})) {
  for (const [method, op] of Object.entries(item)) {
    const tag = (op.tags ?? ["other"])[0];
    if (!byTag.has(tag)) byTag.set(tag, []);
    byTag.get(tag).push({ path, method, op });
  }
}
const root = document.getElementById("operations");
root.textContent = "";
for (const [tag, ops] of byTag) {
  root.append(el("h2", { className: "tag", textContent: tag }));
  for (const { path, method, op } of ops) {
    const rows = (op.parameters ?? []).map((p) =>
      el("tr", {}, el("td", {}, el("code", { textContent: p.name })), el("td", { textContent: p.in }), el("td", { textContent: p.required ? "required" : "" }), el("td", { textContent: p.description ?? "" })));
    if (op.requestBody) {
      rows.push(el("tr", {}, el("td", {}, el("code", { textContent: "body" })), el("td", { textContent: "json" }), el("td", { textContent: op.requestBody.required ? "required" : "" }), el("td", { textContent: op.requestBody.description ?? "" })));
    }
    const answers = Object.entries(op.responses ?? {}).map(([status, r]) => `${status} ${r.description ?? ""}`).join(" · ");
    root.append(el("section", {},
      el("span", { className: `method ${method}`, textContent: method }), el("code", { textContent: path }),
      el("p", { textContent: op.summary ?? "" }),
      rows.length ? el("table", {}, ...rows) : "",
      el("p", { textContent: answers })));
  }
}
