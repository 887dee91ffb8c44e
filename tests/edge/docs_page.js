// Runs the admin API's /docs page script in node with a minimal DOM: loads the page from
// the admin address given as argv[2] (with the token argv[3]), lets it render the OpenAPI
// document, then submits the "try it" form of GET /version. Prints what a reader would see.
"use strict";
const base = process.argv[2];
const token = process.argv[3] || "";
class Element {
  constructor(tag) {
    this.tag = tag; this.children = []; this.attrs = {}; this.listeners = {};
    this.textValue = ""; this.value = ""; this.elements = {};
  }
  setAttribute(k, v) { this.attrs[k] = v; }
  append(...kids) {
    for (const kid of kids) {
      const node = typeof kid === "string" ? Object.assign(new Element("#text"), {textValue: kid}) : kid;
      this.children.push(node);
      if (node.attrs && node.attrs.name) this.elements[node.attrs.name] = node;
      for (const [k, v] of Object.entries(node.elements || {})) this.elements[k] = v;
    }
  }
  replaceChildren() { this.children = []; }
  addEventListener(kind, fn) { this.listeners[kind] = fn; }
  set textContent(v) { this.children = []; this.textValue = v; }
  get textContent() { return this.textValue + this.children.map((c) => c.textContent).join(""); }
  findAll(tag) {
    const out = this.tag === tag ? [this] : [];
    for (const c of this.children) out.push(...c.findAll(tag));
    return out;
  }
}
const ids = {};
for (const id of ["about", "token", "load", "ops", "schemas"]) ids[id] = new Element("div");
const store = {};
globalThis.sessionStorage = {getItem: (k) => store[k] ?? null, setItem: (k, v) => { store[k] = v; }};
globalThis.document = {
  getElementById: (id) => ids[id],
  createElement: (tag) => new Element(tag),
};
const realFetch = globalThis.fetch;
globalThis.fetch = (url, init) => realFetch(new URL(url, base + "/docs"), init);
(async () => {
  const page = await (await realFetch(base + "/docs")).text();
  const script = page.split("<script>")[1].split("</script>")[0];
  eval(script); // the page's own script, as a browser would run it
  await globalThis.backhaulDocsLoaded;
  const refused = ids.about.textContent;  // no token yet: the page says what to do
  ids.token.value = token;  // the reader types the token and presses Load
  await ids.load.listeners.click();
  const boxes = ids.ops.findAll("details");
  if (!boxes.length) throw new Error("no operation shown: " + ids.about.textContent);
  const operations = boxes.map((b) => b.children[0].textContent);
  const version = boxes.find((b) => b.children[0].textContent.includes("/version"));
  const form = version.findAll("form")[0];
  await form.listeners.submit({preventDefault() {}});
  const answer = version.findAll("pre")[0].textContent;
  const drain = boxes.find((b) => b.children[0].textContent.includes("/drain"));
  const fields = Object.keys(drain.findAll("form")[0].elements);
  console.log(JSON.stringify({
    refused, about: ids.about.textContent, operations, answer, fields,
    schemas: ids.schemas.findAll("details").length,
  }));
})().catch((e) => { console.error(e); process.exit(1); });
