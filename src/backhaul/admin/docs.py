"""``/docs``: one self-contained HTML page that reads ``/openapi.json`` and shows it.

No CDN and nothing vendored: a small script lists the operations (method, path, summary,
description, parameters, responses), the schemas, and gives each operation a form that
sends the request (path parameters, a body, the bearer token kept in the tab's session
storage) and shows the answer.
"""

from __future__ import annotations

__all__ = ["docs_page"]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>backhaul admin API</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #ccc}
details{border:1px solid #ddd;border-radius:4px;margin:.4rem 0;padding:.3rem .6rem}
summary{cursor:pointer}code,pre,textarea,input{font:13px ui-monospace,monospace}
pre{background:#f6f6f6;padding:.5rem;overflow:auto;max-height:30rem}
.m{display:inline-block;min-width:4rem;font-weight:bold}.GET{color:#0a6}.POST{color:#06c}
textarea{width:100%;height:8rem}label{display:block;margin:.2rem 0}
</style></head><body>
<h1>backhaul admin API</h1>
<p id="about">Reading <a href="openapi.json">/openapi.json</a>&hellip;</p>
<label>Bearer token (kept in this tab only):
<input id="token" type="password" size="40" autocomplete="off"></label>
<button id="load">Load</button>
<div id="ops"></div><h2>Schemas</h2><div id="schemas"></div>
<script>
"use strict";
const $ = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const kid of kids) e.append(kid);
  return e;
};
const token = document.getElementById("token");
token.value = sessionStorage.getItem("backhaul-token") || "";
const headers = () => {
  sessionStorage.setItem("backhaul-token", token.value);
  return token.value ? {"Authorization": "Bearer " + token.value} : {};
};
function operation(path, method, op) {
  const box = $("details");
  box.append($("summary", {}, $("span", {class: "m " + method}, method), " ",
                $("code", {}, path), " \u2014 " + (op.summary || "")));
  if (op.description) box.append($("p", {}, op.description));
  const form = $("form");
  const params = op.parameters || [];
  for (const p of params) {
    form.append($("label", {}, p.name + " (" + p.in + "): ",
                  $("input", {name: p.name, required: ""})));
  }
  let body = null;
  if (op.requestBody) {
    const types = Object.keys(op.requestBody.content);
    body = $("textarea", {name: "body", placeholder: "request body (" + types.join(", ") + ")"});
    form.append(body);
  }
  const out = $("pre", {}, "");
  form.append($("button", {type: "submit"}, "Try it"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    let url = path;
    for (const p of params) {
      url = url.replace("{" + p.name + "}", encodeURIComponent(form.elements[p.name].value));
    }
    const init = {method, headers: headers()};
    if (body) {
      init.body = body.value;
      init.headers["Content-Type"] = Object.keys(op.requestBody.content)[0];
    }
    out.textContent = "\u2026";
    try {
      const r = await fetch(url, init);
      out.textContent = r.status + " " + r.statusText + "\\n" + await r.text();
    } catch (e) { out.textContent = String(e); }
  });
  const answers = $("ul");
  for (const [status, r] of Object.entries(op.responses || {})) {
    answers.append($("li", {}, status + " " + (r.description || "") + " \u2014 " +
                              Object.keys(r.content || {}).join(", ")));
  }
  box.append(form, out, $("p", {}, "Answers:"), answers);
  return box;
}
async function load() {
  const r = await fetch("openapi.json", {headers: headers()});
  if (!r.ok) {
    document.getElementById("about").textContent =
      "openapi.json answered " + r.status + ": enter the token and press Load.";
    return;
  }
  const doc = await r.json();
  document.getElementById("about").textContent =
    doc.info.title + " " + doc.info.version + " (OpenAPI " + doc.openapi + "). " +
    (doc.info.description || "");
  const ops = document.getElementById("ops");
  ops.replaceChildren();
  const tags = {};
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const tag = (op.tags || ["other"])[0];
      (tags[tag] = tags[tag] || []).push(operation(path, method.toUpperCase(), op));
    }
  }
  for (const [tag, boxes] of Object.entries(tags)) ops.append($("h2", {}, tag), ...boxes);
  const schemas = document.getElementById("schemas");
  schemas.replaceChildren();
  for (const [name, schema] of Object.entries((doc.components || {}).schemas || {})) {
    schemas.append($("details", {}, $("summary", {}, $("code", {}, name)),
                   $("pre", {}, JSON.stringify(schema, null, 1))));
  }
}
document.getElementById("load").addEventListener("click", load);
globalThis.backhaulDocsLoaded = load();  // a promise: done when the page shows the document
</script></body></html>
"""


def docs_page() -> bytes:
    """The page (it fetches ``openapi.json`` next to it)."""
    return _PAGE.encode()
