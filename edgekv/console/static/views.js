// The console's views. Everything the node answers is data, never markup: it is
// put in the page with textContent only (a key named "<img onerror=...>" is text).

import { api, paths, ApiError } from "./api.js";
import { lineChart, formatNumber } from "./charts.js";
import { follow } from "./sse.js";

export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name in element && name !== "list") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

// replaceChildren, leaving out the parts a view did not show (null).
function fill(element, ...children) {
  element.replaceChildren(...children.filter((child) => child !== null && child !== undefined));
}

function errorLine(error) {
  const text = error instanceof ApiError ? error.message : String(error);
  return h("p", { className: "error", role: "alert" }, text);
}

function ago(ms) {
  if (ms === null || ms === undefined) return "never";
  const seconds = Math.max(0, (Date.now() - ms) / 1000);
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

// ---- cluster -------------------------------------------------------------

function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  const size = Math.abs(ms);
  if (size < 10_000) return `${Math.round(ms)} ms`;
  if (size < 120_000) return `${Math.round(ms / 1000)} s`;
  return `${Math.round(ms / 60_000)} min`;
}

const NO_REGION = "(no region)";

// A member's region: its `region` field (null: a node without one, or a seed
// not heard yet). A status from a node older than regions has no such field;
// there, the name up to its last "-" stands in ("fra-1" in "fra").
export function regionOf(member) {
  if ("region" in member) return member.region || NO_REGION;
  const name = member.name || "";
  const cut = name.lastIndexOf("-");
  return cut > 0 ? name.slice(0, cut) : NO_REGION;
}

// The backbone's states rank with the members': resync_required and down are outages.
const STATE_RANK = { down: 0, resync_required: 0, joining: 1, connecting: 1, up: 2, removed: 3 };

// Worst first: down before joining before up, then by lag.
function severity(member) {
  return [STATE_RANK[member.state] ?? 0, -(member.lag_ms ?? 0), -(member.lag_changes ?? 0)];
}

function compare(a, b) {
  const [x, y] = [severity(a), severity(b)];
  for (let i = 0; i < x.length; i += 1) if (x[i] !== y[i]) return x[i] - y[i];
  return (a.name || a.url).localeCompare(b.name || b.url);
}

export function groupMembers(members) {
  const groups = new Map();
  for (const member of members) {
    const region = regionOf(member);
    if (!groups.has(region)) groups.set(region, []);
    groups.get(region).push(member);
  }
  const sorted = [...groups.entries()].map(([region, list]) => [region, list.sort(compare)]);
  return sorted.sort((a, b) => compare(a[1][0], b[1][0]) || a[0].localeCompare(b[0]));
}

function memberRow(member) {
  const region = regionOf(member);
  return h("tr", { className: `member state-${member.state}`,
    dataset: { state: member.state, name: member.name, node: member.node_id ?? "", region } },
  // One line a member (the URL as a tooltip), so 48 and more fit a screen or two.
  h("td", { title: member.url }, member.name || member.url,
    // Not pulled from directly: its changes come relayed by peers or over the backbone.
    member.direct === false ? h("span", { className: "sub via" }, " (not direct)") : null),
  h("td", {}, h("span", { className: `badge ${member.state}` }, member.state)),
  h("td", { className: "num" }, formatNumber(member.lag_changes)),
  h("td", { className: "num" }, duration(member.lag_ms)),
  h("td", { className: "num" }, duration(member.clock_offset_ms)),
  h("td", {}, ago(member.last_contact_ms)),
  h("td", { className: "last-error" }, member.last_error || ""));
}

export function renderCluster(status) {
  const me = status.node;
  const counts = {};
  for (const member of status.members) counts[member.state] = (counts[member.state] ?? 0) + 1;
  const summary = Object.entries(counts).sort().map(([state, n]) =>
    h("span", { className: `badge ${state}` }, `${n} ${state}`));
  const rows = [];
  for (const [region, members] of groupMembers(status.members)) {
    const down = members.filter((m) => m.state === "down").length;
    rows.push(h("tr", { className: "region" }, h("th", { colSpan: 7 }, region,
      h("span", { className: "sub" }, ` ${members.length} member(s)${down ? `, ${down} down` : ""}`))));
    rows.push(...members.map(memberRow));
  }
  const upstream = status.upstream ? serviceSection("upstream", "Upstream", status.upstream,
    status.upstream.url, `${formatNumber(status.upstream.lag_changes)} changes to push`) : null;
  const bb = status.backbone;
  const backbone = bb ? serviceSection("backbone", "Backbone", bb, `${bb.url} stream ${bb.stream}`,
    `${formatNumber(bb.lag_changes)} changes to publish, ${formatNumber(bb.pending_messages ?? 0)} to consume`) : null;
  return h("div", { id: "cluster" },
    h("section", { className: "this-node" },
      h("h2", {}, `This node: ${me.name}`),
      h("dl", {},
        h("dt", {}, "node id"), h("dd", {}, me.node_id),
        "region" in me ? [h("dt", {}, "region"), h("dd", { id: "node-region" }, me.region || NO_REGION)] : null,
        h("dt", {}, "seq"), h("dd", {}, me.seq),
        h("dt", {}, "keys"), h("dd", {}, formatNumber(me.keys)),
        h("dt", {}, "database"), h("dd", {}, formatNumber(me.db_bytes, "B")),
        h("dt", {}, "held-back changes"), h("dd", {}, me.held_changes),
        h("dt", {}, "clock ahead of peers"),
        h("dd", {}, me.clock_ahead_ms === null ? "–" : `${me.clock_ahead_ms} ms`))),
    h("section", {},
      h("h2", {}, `Members (${status.members.length}) `, ...summary),
      h("table", { id: "members" },
        h("thead", {}, h("tr", {}, ...["member", "state", "lag (changes)", "lag (ms)",
          "clock offset", "last contact", "last error"].map((t) => h("th", {}, t)))),
        h("tbody", {}, rows))),
    // Links to the outside, worst first like the members.
    ...[upstream, backbone].filter(Boolean).sort((a, b) => a.rank - b.rank).map((s) => s.section));
}

// The upstream's or the backbone's row: its state, what it has yet to take, its
// lag, last contact and last error.
function serviceSection(id, title, service, where, pending) {
  return { rank: STATE_RANK[service.state] ?? 0, section: h("section", { id }, h("h3", {}, title),
    h("table", {}, h("tbody", {}, h("tr", { className: `member state-${service.state}`, dataset: { state: service.state } },
      h("td", {}, where),
      h("td", {}, h("span", { className: `badge ${service.state}` }, service.state)),
      h("td", { className: "num lag-changes" }, pending),
      "lag_ms" in service ? h("td", { className: "num lag-ms" }, duration(service.lag_ms)) : null,
      h("td", {}, ago(service.last_contact_ms)),
      h("td", { className: "last-error" }, service.last_error || ""))))) };
}

export async function clusterView(root, signal) {
  const render = async () => {
    try {
      const status = await api(paths.status);
      if (signal.aborted) return; // answered after the operator moved to another view
      document.getElementById("node-name").textContent = status.node.name;
      root.replaceChildren(renderCluster(status),
        h("p", { className: "sub" }, `updated ${new Date().toLocaleTimeString()}`));
    } catch (error) {
      if (!signal.aborted) root.replaceChildren(errorLine(error));
    }
  };
  await render();
  poll(render, 2000, signal);
}

function poll(task, everyMs, signal) {
  const timer = setInterval(() => { if (!document.hidden) task(); }, everyMs);
  signal.addEventListener("abort", () => clearInterval(timer));
}

// ---- charts --------------------------------------------------------------

export async function chartsView(root, signal) {
  const render = async () => {
    try {
      const history = await api(paths.history);
      if (signal.aborted) return;
      const t = history.t;
      const peers = Object.entries(history.lag_ms).map(([id, peer]) =>
        ({ name: peer.name || id, values: peer.values }));
      root.replaceChildren(h("div", { id: "charts" },
        h("p", { className: "sub" },
          `The last hour of this node, a sample every ${history.interval_s} s (${t.length} so far).`),
        lineChart({ title: "Requests per second", times: t, unit: "/s", series: [
          { name: "reads", values: history.reads_per_s },
          { name: "writes", values: history.writes_per_s }] }),
        lineChart({ title: "Propagation lag per peer", times: t, unit: "ms",
          series: peers.length ? peers : [{ name: "no peers", values: [] }] }),
        lineChart({ title: "Changes applied from peers per second", times: t, unit: "/s",
          series: [{ name: "applied", values: history.applied_per_s }] }),
        lineChart({ title: "Held-back changes", times: t,
          series: [{ name: "held", values: history.held_changes }] }),
        lineChart({ title: "Database size", times: t, unit: "B",
          series: [{ name: "database and WAL", values: history.db_bytes }] })));
    } catch (error) {
      if (!signal.aborted) root.replaceChildren(errorLine(error));
    }
  };
  await render();
  poll(render, 5000, signal);
}

// ---- keys ----------------------------------------------------------------

const SHOWN_BYTES = 64 * 1024;

// How a value is shown: JSON pretty-printed, text, or hex for binary.
export function describeValue(bytes) {
  const shown = bytes.subarray(0, SHOWN_BYTES);
  let text = null;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    text = null;
  }
  if (text !== null) {
    try {
      const parsed = JSON.parse(text);
      if (parsed !== null && typeof parsed === "object") {
        const pretty = JSON.stringify(parsed, null, 2);
        return { kind: "json", text: pretty.slice(0, SHOWN_BYTES), truncated: pretty.length > SHOWN_BYTES };
      }
    } catch { /* text, not JSON */ }
    return { kind: "text", text: text.slice(0, SHOWN_BYTES), truncated: text.length > SHOWN_BYTES };
  }
  const lines = [];
  for (let at = 0; at < shown.length; at += 16) {
    const row = [...shown.subarray(at, at + 16)];
    lines.push(`${at.toString(16).padStart(8, "0")}  ${row.map((b) => b.toString(16).padStart(2, "0")).join(" ")}`);
  }
  return { kind: "hex", text: lines.join("\n"), truncated: bytes.length > SHOWN_BYTES };
}

export async function keysView(root, signal, params) {
  const sidebar = h("aside", { id: "namespaces" }, h("h2", {}, "Namespaces"));
  const nsInput = h("input", { id: "ns", placeholder: "namespace", value: params.get("ns") ?? "" });
  const prefixInput = h("input", { id: "prefix", placeholder: "key prefix", value: params.get("prefix") ?? "" });
  const results = h("div", { id: "key-list" });
  const detail = h("div", { id: "key-detail" });
  const form = h("form", { id: "key-search", onsubmit: (event) => { event.preventDefault(); search(null); } },
    nsInput, prefixInput, h("button", { type: "submit" }, "Search"),
    h("button", { type: "button", id: "new-key", onclick: () => editor(nsInput.value, "", new Uint8Array(), null) }, "New key"));
  root.replaceChildren(h("div", { className: "split" }, sidebar,
    h("div", {}, form, results, detail)));

  try {
    const listing = await api(paths.namespaces);
    sidebar.append(h("ul", {}, listing.namespaces.map((ns) => h("li", {},
      h("a", { href: "#", className: "ns-link", dataset: { ns: ns.name },
        onclick: (event) => { event.preventDefault(); nsInput.value = ns.name; search(null); } },
      ns.name), h("span", { className: "count" }, ` ${ns.keys}`)))));
  } catch (error) {
    sidebar.append(errorLine(error));
  }

  async function search(cursor) {
    const ns = nsInput.value.trim();
    if (!ns) return;
    detail.replaceChildren();
    try {
      const page = await api(paths.keys(ns, { prefix: prefixInput.value, limit: 50, cursor }));
      const rows = page.keys.map((key) => h("tr", { className: "key-row", dataset: { key: key.name } },
        h("td", {}, h("a", { href: "#", onclick: (event) => { event.preventDefault(); open(ns, key.name); } }, key.name)),
        h("td", {}, key.expiration ? new Date(key.expiration * 1000).toISOString() : ""),
        h("td", {}, key.metadata ? JSON.stringify(key.metadata) : "")));
      fill(results,
        h("table", { id: "keys" }, h("thead", {}, h("tr", {}, h("th", {}, "key"), h("th", {}, "expires"), h("th", {}, "metadata"))),
          h("tbody", {}, rows)),
        rows.length ? null : h("p", {}, "No keys."),
        page.cursor ? h("button", { id: "next-page", onclick: () => search(page.cursor) }, "Next page") : null);
    } catch (error) {
      results.replaceChildren(errorLine(error));
    }
  }

  async function open(ns, key) {
    try {
      const response = await api(paths.key(ns, key), { raw: true });
      const bytes = new Uint8Array(await response.arrayBuffer());
      const meta = response.headers.get("EdgeKV-Metadata");
      const expiration = response.headers.get("EdgeKV-Expiration");
      const version = (response.headers.get("ETag") || "").replaceAll('"', "");
      const shown = describeValue(bytes);
      const download = h("a", { id: "download", download: key.split("/").pop() || "value",
        href: URL.createObjectURL(new Blob([bytes])) }, `download (${formatNumber(bytes.length, "B")})`);
      detail.replaceChildren(h("section", { id: "value" },
        h("h3", {}, `${ns} / `, h("code", { id: "value-key" }, key)),
        h("dl", {},
          h("dt", {}, "version"), h("dd", { id: "value-version" }, version),
          h("dt", {}, "size"), h("dd", {}, formatNumber(bytes.length, "B")),
          h("dt", {}, "metadata"), h("dd", { id: "value-metadata" }, meta ?? "none"),
          h("dt", {}, "expires"), h("dd", { id: "value-expiration" }, expiration ? new Date(Number(expiration) * 1000).toISOString() : "never")),
        h("p", {}, h("span", { className: "badge", id: "value-kind" }, shown.kind), " ",
          shown.truncated ? h("span", { id: "truncated" }, `first ${formatNumber(SHOWN_BYTES, "B")} shown; `) : null,
          download),
        h("pre", { id: "value-text", className: shown.kind }, shown.text),
        h("div", { className: "actions" },
          shown.kind === "hex" ? null
            : h("button", { id: "edit", onclick: () => editor(ns, key, bytes, meta) }, "Edit"),
          h("button", { id: "delete", className: "danger", onclick: () => confirmDelete(ns, key) }, "Delete"))));
    } catch (error) {
      detail.replaceChildren(errorLine(error));
    }
  }

  function editor(ns, key, bytes, meta) {
    const keyInput = h("input", { id: "edit-key", value: key, placeholder: "key", readOnly: Boolean(key) });
    const valueInput = h("textarea", { id: "edit-value", rows: 10, cols: 80 },
      new TextDecoder().decode(bytes));
    const metaInput = h("input", { id: "edit-metadata", value: meta ?? "", placeholder: '{"metadata": "JSON object"}', size: 60 });
    const problem = h("p", { className: "error", role: "alert" });
    detail.replaceChildren(h("form", { id: "editor", onsubmit: async (event) => {
      event.preventDefault();
      const headers = metaInput.value.trim() ? { "EdgeKV-Metadata": metaInput.value.trim() } : {};
      try {
        await api(paths.key(ns, keyInput.value), { method: "PUT", body: valueInput.value, headers });
        await search(null);
        await open(ns, keyInput.value);
      } catch (error) {
        problem.textContent = error.message;
      }
    } }, h("h3", {}, key ? `Edit ${ns} / ${key}` : `New key in ${ns}`),
    h("label", {}, "key ", keyInput), h("label", {}, "value", valueInput),
    h("label", {}, "metadata ", metaInput),
    h("button", { type: "submit", id: "save" }, "Save"), problem));
  }

  function confirmDelete(ns, key) {
    const box = h("div", { id: "confirm", className: "confirm", role: "alertdialog" },
      h("p", {}, "Delete ", h("code", {}, key), ` from ${ns}? The delete replicates to every PoP.`),
      h("button", { id: "confirm-delete", className: "danger", onclick: async () => {
        try {
          await api(paths.key(ns, key), { method: "DELETE" });
          await search(null);
          detail.replaceChildren(h("p", { id: "deleted" }, `Deleted ${key}.`));
        } catch (error) {
          box.append(errorLine(error));
        }
      } }, "Delete for good"),
      h("button", { id: "cancel-delete", onclick: () => box.remove() }, "Cancel"));
    detail.append(box);
  }

  if (nsInput.value) await search(null);
}

// ---- documents -------------------------------------------------------------

function cell(value) {
  if (value === undefined) return "";
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 79)}…` : text;
}

export async function documentsView(root, signal) {
  const sidebar = h("aside", { id: "collections" }, h("h2", {}, "Collections"));
  const collectionInput = h("input", { id: "collection", placeholder: "collection" });
  const whereInput = h("textarea", { id: "where", rows: 3, cols: 40, placeholder: "one filter a line: age>=30" });
  const orderInput = h("input", { id: "order-by", placeholder: "order_by: age or -age" });
  const results = h("div", { id: "doc-results" });
  const detail = h("div", { id: "doc-detail" });
  const indexes = h("div", { id: "indexes" });
  const form = h("form", { id: "doc-query", onsubmit: (event) => { event.preventDefault(); run(null); } },
    collectionInput, whereInput, orderInput, h("button", { type: "submit" }, "Run query"));
  root.replaceChildren(h("div", { className: "split" }, sidebar, h("div", {}, form, indexes, results, detail)));

  try {
    const listing = await api(paths.collections);
    sidebar.append(h("ul", {}, listing.collections.map((c) => h("li", {},
      h("a", { href: "#", className: "collection-link", dataset: { collection: c.name },
        onclick: (event) => { event.preventDefault(); collectionInput.value = c.name; run(null); } }, c.name),
      h("span", { className: "count" }, ` ${c.documents}`)))));
  } catch (error) {
    sidebar.append(errorLine(error));
  }

  async function run(cursor) {
    const collection = collectionInput.value.trim();
    if (!collection) return;
    detail.replaceChildren();
    const where = whereInput.value.split("\n").map((line) => line.trim()).filter(Boolean);
    try {
      const [page, declared] = await Promise.all([
        api(paths.documents(collection, { where, order_by: orderInput.value.trim(), limit: 50, cursor })),
        api(paths.indexes(collection)),
      ]);
      indexes.replaceChildren(h("p", {}, "Indexes: ",
        declared.indexes.length ? declared.indexes.map((i) => i.field).join(", ") : "none"));
      const fields = [...new Set(page.documents.flatMap((d) => Object.keys(d.doc)))].slice(0, 8);
      fill(results, h("table", { id: "documents" },
        h("thead", {}, h("tr", {}, h("th", {}, "id"), ...fields.map((f) => h("th", {}, f)))),
        h("tbody", {}, page.documents.map((d) => h("tr", { className: "doc-row", dataset: { id: d.id } },
          h("td", {}, h("a", { href: "#", onclick: (event) => { event.preventDefault(); open(collection, d.id); } }, d.id)),
          ...fields.map((f) => h("td", {}, cell(d.doc[f]))))))),
      h("p", { className: "sub" }, `${page.documents.length} document(s)`),
      page.cursor ? h("button", { id: "next-docs", onclick: () => run(page.cursor) }, "Next page") : null);
    } catch (error) {
      results.replaceChildren(errorLine(error));
    }
  }

  async function open(collection, id) {
    try {
      const document = await api(paths.document(collection, id));
      detail.replaceChildren(h("section", { id: "document" },
        h("h3", {}, `${collection} / `, h("code", {}, document.id)),
        h("p", {}, "version ", h("code", { id: "doc-version" }, document.version)),
        h("pre", { id: "doc-json" }, JSON.stringify(document.doc, null, 2))));
    } catch (error) {
      detail.replaceChildren(errorLine(error));
    }
  }
}

// ---- live feed -----------------------------------------------------------

const FEED_ROWS = 200; // rows kept in the page: a busy namespace does not grow it
const PREVIEW_BYTES = 256;

// A value's first 256 bytes as the feed shows them: text, or hex for binary.
export function preview(bytes) {
  const cut = bytes.length > PREVIEW_BYTES;
  const head = bytes.subarray(0, PREVIEW_BYTES);
  const decoder = new TextDecoder("utf-8", { fatal: true });
  // A cut may split a character: drop at most its 3 leading bytes.
  for (let drop = 0; drop <= (cut ? 3 : 0); drop++) {
    try { return { text: decoder.decode(head.subarray(0, head.length - drop)), hex: false, cut }; }
    catch { /* not text (yet) */ }
  }
  return { text: Array.from(head, (b) => b.toString(16).padStart(2, "0")).join(""), hex: true, cut };
}

function base64Bytes(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

// A watch event's data as a feed row (the fields of a recent-changes row).
function fromWatch(ns, event) {
  const row = { ns, key: event.key, op: event.op, version: event.version,
    origin: event.version.slice(16), seq: parseInt(event.bookmark.split(".")[2], 16), via: "watch" };
  if (event.value !== undefined) {
    const bytes = base64Bytes(event.value);
    const shown = preview(bytes);
    Object.assign(row, { preview: shown.text, preview_kind: shown.hex ? "hex" : "text",
      truncated: shown.cut, value_bytes: bytes.length });
  } else if (event.value_bytes !== undefined) {
    Object.assign(row, { preview: "(not sent)", preview_kind: "text", truncated: false,
      value_bytes: event.value_bytes });
  }
  return row;
}

// A namespace chosen: its watch (fetch with the bearer header, resumed after a
// cut), first filled with its recent changes. All namespaces: no watch spans
// them, so the recent changes of this node's log are polled.
export async function feedView(root, signal) {
  const nsInput = h("input", { id: "feed-ns", placeholder: "namespace (all)" });
  const prefixInput = h("input", { id: "feed-prefix", placeholder: "key prefix" });
  const state = h("span", { id: "feed-state", className: "sub" });
  const note = h("p", { className: "sub" });
  const list = h("tbody", {});
  let following = null; // the AbortController of the current filter's feed
  // Origins by name: the members as this node knows them (ids stay as a tooltip).
  const names = new Map();
  try {
    const status = await api(paths.status);
    names.set(status.node.node_id, status.node.name);
    for (const member of status.members) if (member.node_id) names.set(member.node_id, member.name);
  } catch { /* ids alone, then */ }
  const form = h("form", { id: "feed-filter", onsubmit: (event) => { event.preventDefault(); start(); } },
    nsInput, prefixInput, h("button", { type: "submit" }, "Filter"), state);
  root.replaceChildren(h("div", { id: "feed" }, note,
    form, h("table", { id: "changes" }, h("thead", {}, h("tr", {}, ...["seq", "time", "op", "namespace",
      "key", "value", "origin"].map((t) => h("th", {}, t)))), list)));

  function rowOf(change, fresh) {
    // The stamp's physical part: milliseconds since the epoch.
    const wall = Number(BigInt(`0x${change.version.slice(0, 16)}`) >> 16n);
    const value = change.op !== "put" ? `(${change.op === "delete" ? "deleted" : "expired"})`
      : `${change.preview}${change.truncated ? "…" : ""} (${formatNumber(change.value_bytes, "B")})`;
    return h("tr", { className: `change ${fresh ? "new" : ""}`,
      dataset: { seq: change.seq, key: change.key, version: change.version, via: change.via } },
    h("td", { className: "num" }, change.seq),
    h("td", {}, new Date(wall).toLocaleTimeString()),
    h("td", {}, change.op), h("td", {}, change.ns), h("td", {}, change.key),
    h("td", { className: change.preview_kind === "hex" ? "hex" : "" }, value),
    h("td", { title: change.origin }, names.get(change.origin) ?? change.origin));
  }

  function start() {
    following?.abort();
    following = new AbortController();
    signal.addEventListener("abort", () => following.abort(), { once: true });
    list.replaceChildren();
    const ns = nsInput.value.trim();
    if (ns) watch(ns, prefixInput.value, following.signal);
    else pollAll(following.signal);
  }

  // ---- one namespace: its watch
  function watch(ns, prefix, stop) {
    note.textContent = `Changes of namespace ${ns} as they happen (its watch), newest first; `
      + `the first rows are its recent changes (values cut to ${PREVIEW_BYTES} bytes).`;
    const shown = new Map(); // key -> its row in the page
    const place = (change, fresh, atTop) => {
      const old = shown.get(change.key);
      if (old && old.dataset.version >= change.version) return; // versions order as text
      old?.remove();
      const row = rowOf(change, fresh);
      shown.set(change.key, row);
      if (atTop) list.prepend(row); else list.append(row);
      while (list.rows.length > FEED_ROWS) {
        shown.delete(list.lastElementChild.dataset.key);
        list.lastElementChild.remove();
      }
    };
    const fill = async () => {
      try {
        const page = await api(paths.changes({ ns, prefix, limit: 50 }));
        if (stop.aborted) return;
        for (const change of page.changes) place({ ...change, via: "recent" }, false, false);
      } catch (error) {
        state.textContent = error.message;
      }
    };
    let filled = false;
    follow(paths.watchKeys(ns, { prefix }), {
      signal: stop,
      onStatus: (text) => { state.textContent = text; },
      onRelist: () => { list.replaceChildren(); shown.clear(); filled = false; },
      onEvent: (type, data) => {
        if (type === "change") place(fromWatch(ns, JSON.parse(data)), true, true);
        else if (type === "ready") {
          state.textContent = "live"; // from here on, every change comes as it happens
          if (!filled) { filled = true; fill(); }
        } else if (type === "cut" || type === "relist") state.textContent = JSON.parse(data).reason;
      },
    });
  }

  // ---- all namespaces: the recent changes, polled
  function pollAll(stop) {
    note.textContent = "Recent changes of this node's log, newest first, polled every second "
      + `(values cut to ${PREVIEW_BYTES} bytes). Choose a namespace to follow its watch.`;
    state.textContent = "";
    let newest = 0;
    async function refresh() {
      try {
        const page = await api(paths.changes({ ns: "", prefix: prefixInput.value, limit: 50 }));
        if (stop.aborted) return;
        const fresh = newest;
        list.replaceChildren(...page.changes.map((change) =>
          rowOf({ ...change, via: "recent" }, fresh && change.seq > fresh)));
        newest = Math.max(newest, ...page.changes.map((c) => c.seq));
      } catch (error) {
        list.replaceChildren(h("tr", {}, h("td", { colSpan: 7 }, errorLine(error))));
      }
    }
    refresh();
    poll(refresh, 1000, stop);
  }

  start();
}
