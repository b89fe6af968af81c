// The shared client conformance scenarios (tests/conformance/client.json), through the JS
// client. The Python client runs the same file (tests/test_client_conformance.py).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { before, describe, it } from "node:test";
import * as edgekv from "../dist/index.js";
import { credentials, startStrongNode } from "./nodes.mjs";

const { EdgeKV, ApiError, ERROR_CLASSES, PreconditionFailed } = edgekv;
const { scenarios } = JSON.parse(readFileSync(new URL("../../tests/conformance/client.json", import.meta.url), "utf8"));

/** The scenario's generators (`{repeat, count}`, `{names, count}`) expanded, recursively. */
function expand(item) {
  if (Array.isArray(item)) return item.map(expand);
  if (item === null || typeof item !== "object") return item;
  const keys = Object.keys(item).sort().join();
  if (keys === "count,repeat") return item.repeat.repeat(item.count);
  if (keys === "count,names") return Array.from({ length: item.count }, (_, i) => `${item.names}${i}`);
  return Object.fromEntries(Object.entries(item).map(([k, v]) => [k, expand(v)]));
}

const valueOf = (value) => ("base64" in value ? Uint8Array.from(Buffer.from(value.base64, "base64")) : value.text);
const bytesOf = (value) => Buffer.from("base64" in value ? Buffer.from(value.base64, "base64") : Buffer.from(value.text, "utf8"));

function sameValue(got, want) {
  if (want === null) return got === null;
  return got !== null && Buffer.from(got).equals(bytesOf(want));
}

class Runner {
  saved = {};
  constructor(clients) {
    this.clients = clients;
  }

  ref(value) {
    return typeof value === "string" && value.startsWith("$") ? this.saved[value.slice(1)] : value;
  }

  operations(ops) {
    return ops.map(({ value, ttl, ...op }) => ({
      ...op,
      ...(value !== undefined && { value: valueOf(value) }),
      ...(ttl !== undefined && { expirationTtl: ttl }),
    }));
  }

  call(step) {
    const kv = this.clients[step.as ?? "admin"];
    if (step.call.startsWith("doc_")) return this.docCall(kv.docs(step.collection), step);
    if (/^(counter|set)_/.test(step.call)) return this.crdtCall(kv, step);
    const ns = kv.namespace(step.ns);
    switch (step.call) {
      case "put":
        return ns.put(step.key, valueOf(step.value), {
          expirationTtl: step.ttl,
          expiration: step.expiration,
          metadata: step.metadata,
          ifMatch: this.ref(step.if_match),
          ifNoneMatch: step.if_none_match,
        });
      case "get":
        return ns.get(step.key, { type: "arrayBuffer", consistency: step.consistency });
      case "get_with_metadata":
        return ns.getWithMetadata(step.key, "arrayBuffer");
      case "delete":
        return ns.delete(step.key, { ifMatch: this.ref(step.if_match) });
      case "list":
        return ns.list({ prefix: step.prefix, limit: step.limit, cursor: this.ref(step.cursor) });
      case "get_many":
        return ns.get(step.keys, "arrayBuffer");
      case "bulk":
        return ns.bulk(this.operations(step.operations));
      case "transaction": {
        const conditions = (step.conditions ?? []).map((c) => ("version" in c ? { ...c, version: this.ref(c.version) } : c));
        return ns.transaction(this.operations(step.operations), conditions);
      }
    }
    throw new Error(`unknown call ${step.call}`);
  }

  crdtCall(kv, step) {
    const counter = kv.counter(step.ns, step.key);
    const set = kv.set(step.ns, step.key);
    switch (step.call) {
      case "counter_add": {
        // A string of digits is an add past 2^53 (see the README): sent as a bigint.
        const n = typeof step.add === "string" ? BigInt(step.add) : step.add;
        return counter.add(n, { min: step.min, max: step.max, ttl: step.ttl, expiration: step.expiration });
      }
      case "counter_value":
        return counter.value();
      case "counter_reset":
        return counter.reset();
      case "set_add":
        return set.add(step.members);
      case "set_remove":
        return set.remove(step.members);
      case "set_clear":
        return set.clear();
      case "set_members":
        return set.members({ prefix: step.prefix, limit: step.limit, cursor: this.ref(step.cursor) });
    }
    throw new Error(`unknown call ${step.call}`);
  }

  docCall(docs, step) {
    switch (step.call) {
      case "doc_put":
        return docs.put(step.id, step.doc);
      case "doc_patch":
        return docs.patch(step.id, step.patch);
      case "doc_delete":
        return docs.delete(step.id);
      case "doc_get":
        return docs.get(step.id);
      case "doc_query":
        return docs.queryPage({ where: step.where, orderBy: step.order_by, limit: step.limit, cursor: this.ref(step.cursor) });
      case "doc_create_index":
        return docs.createIndex(step.field);
      case "doc_indexes":
        return docs.indexes();
    }
    throw new Error(`unknown call ${step.call}`);
  }

  async run(step) {
    const expect = step.expect;
    let result;
    try {
      result = await this.call(step);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      assert.ok("error" in expect, `unexpected ${error}`);
      assert.equal(error.code, expect.error);
      assert.ok(error instanceof edgekv[expect.family], `${error.name} is not a ${expect.family}`);
      assert.ok(error instanceof ERROR_CLASSES[expect.error], `${error.name} is not the code's class`);
      if ("current_version" in expect) {
        assert.ok(error instanceof PreconditionFailed);
        assert.equal(error.currentVersion, this.ref(expect.current_version));
      }
      if ("failed_keys" in expect) assert.deepEqual(error.details.failed.map((f) => f.key), expect.failed_keys);
      for (const [field, want] of Object.entries(expect.details ?? {})) assert.deepEqual(error.details[field], want, field);
      return;
    }
    assert.ok(!("error" in expect), `expected ${expect.error}, got ${JSON.stringify(result)}`);
    this.check(step, expect, result);
  }

  check(step, expect, result) {
    if (step.save_version) this.saved[step.save_version] = result.version;
    if (step.save_cursor) this.saved[step.save_cursor] = result.cursor;
    if ("ok" in expect) assert.equal(typeof result.bookmark, "string");
    if ("value" in expect) assert.ok(sameValue(result, expect.value), `got ${result && Buffer.from(result)}`);
    if ("entry" in expect) this.checkEntry(result, expect.entry);
    if ("names" in expect) assert.deepEqual(result.keys.map((k) => k.name), expect.names);
    if ("list_complete" in expect) assert.equal(result.list_complete, expect.list_complete);
    if ("entries" in expect) {
      assert.deepEqual([...result.keys()].sort(), Object.keys(expect.entries).sort());
      for (const [name, want] of Object.entries(expect.entries)) assert.ok(sameValue(result.get(name), want), name);
    }
    if ("doc" in expect) assert.deepEqual(result?.doc ?? null, expect.doc);
    if ("ids" in expect) assert.deepEqual(result.documents.map((d) => d.id), expect.ids);
    if ("index" in expect) assert.equal(result.field, expect.index);
    if ("fields" in expect) assert.deepEqual(result.map((i) => i.field), expect.fields);
    if ("counter_value" in expect) assert.equal(result, expect.counter_value);
    if ("members" in expect) assert.deepEqual(result.members, expect.members);
  }

  checkEntry(entry, want) {
    if (want === null) {
      assert.equal(entry.value, null);
      return;
    }
    assert.ok(sameValue(entry.value, want.value));
    assert.deepEqual(entry.metadata, want.metadata);
    for (const field of ["expiration", "version"]) {
      if (want[field] === "set") assert.notEqual(entry[field], null, field);
      else assert.equal(entry[field], want[field], field);
    }
  }
}

describe("conformance scenarios", () => {
  let clients;
  before(async () => {
    const node = await startStrongNode(credentials());
    const options = { url: node.url, retries: 0 };
    clients = {
      admin: new EdgeKV({ ...options, token: node.token }),
      reader: new EdgeKV({ ...options, token: node.readToken }),
      nobody: new EdgeKV(options),
    };
  });

  for (const scenario of scenarios) {
    it(scenario.name, async () => {
      const runner = new Runner(clients);
      for (const [index, step] of expand(scenario.steps).entries()) {
        try {
          await runner.run(step);
        } catch (error) {
          error.message = `step ${index} (${step.call}): ${error.message}`;
          throw error;
        }
      }
    });
  }
});
