// The Workers-KV-shaped binding against a real node: every method, every value type,
// 0 bytes and 25 MiB values, streams, get-many past the node's answer budget.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { EdgeKV, NotFound, TooLarge, ValueTooLargeError, InvalidKeyError, InvalidMetadataError, InvalidUnicodeError, MetadataTooLargeError } from "../dist/index.js";
import { credentials, startNode } from "./nodes.mjs";

const MiB = 1024 * 1024;
let kv;

before(async () => {
  // A small get-many budget, so that an answer leaves values out for the client to fetch.
  const node = await startNode(credentials(), "kv", ["--max-get-many-bytes", "1000"]);
  kv = new EdgeKV({ url: node.url, token: node.token });
});

async function readAll(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

const streamOf = (...chunks) =>
  new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
      controller.close();
    },
  });

describe("get", () => {
  it("reads text, json, arrayBuffer and stream, by type or options", async () => {
    const ns = kv.namespace("types");
    await ns.put("doc", JSON.stringify({ on: true, name: "é" }));
    assert.equal(await ns.get("doc"), '{"on":true,"name":"é"}');
    assert.equal(await ns.get("doc", "text"), '{"on":true,"name":"é"}');
    assert.deepEqual(await ns.get("doc", "json"), { on: true, name: "é" });
    assert.deepEqual(await ns.get("doc", { type: "json", cacheTtl: 60 }), { on: true, name: "é" });
    const buffer = await ns.get("doc", { type: "arrayBuffer" });
    assert.ok(buffer instanceof ArrayBuffer);
    assert.equal(Buffer.from(buffer).toString(), '{"on":true,"name":"é"}');
    assert.equal((await readAll(await ns.get("doc", "stream"))).toString(), '{"on":true,"name":"é"}');
  });

  it("answers null for an absent key, whatever the type", async () => {
    const ns = kv.namespace("types");
    for (const type of ["text", "json", "arrayBuffer", "stream"]) assert.equal(await ns.get("absent", type), null);
    assert.deepEqual(await ns.getWithMetadata("absent"), { value: null, metadata: null, cacheStatus: null, version: null, expiration: null });
  });

  it("getWithMetadata answers value, metadata, version and expiration", async () => {
    const ns = kv.namespace("meta");
    const written = await ns.put("k", "v", { metadata: { owner: "wéb", tags: ["a"] }, expirationTtl: 120 });
    const entry = await ns.getWithMetadata("k");
    assert.equal(entry.value, "v");
    assert.deepEqual(entry.metadata, { owner: "wéb", tags: ["a"] });
    assert.equal(entry.version, written.version);
    assert.equal(entry.cacheStatus, null);
    const now = Date.now() / 1000;
    assert.ok(entry.expiration > now + 100 && entry.expiration <= now + 121, String(entry.expiration));
    const asJson = await ns.getWithMetadata("k", { type: "json" }).catch((e) => e);
    assert.ok(asJson instanceof SyntaxError, "a value that is not JSON fails to parse as json");
  });
});

describe("put", () => {
  it("takes strings, ArrayBuffers, typed arrays, DataViews and streams", async () => {
    const ns = kv.namespace("values");
    const backing = new Uint8Array([9, 9, 1, 2, 3, 4, 9, 9]);
    await ns.put("string", "héllo");
    await ns.put("buffer", new Uint8Array([0, 255, 128]).buffer);
    await ns.put("typed", backing.subarray(2, 6)); // a view: only its own bytes are sent
    await ns.put("int16", new Int16Array([1, -1]));
    await ns.put("view", new DataView(backing.buffer, 1, 3));
    await ns.put("stream", streamOf(new TextEncoder().encode("a"), new Uint8Array(0), new TextEncoder().encode("bc")));
    const bytes = async (key) => [...new Uint8Array(await ns.get(key, "arrayBuffer"))];
    assert.equal(await ns.get("string"), "héllo");
    assert.deepEqual(await bytes("buffer"), [0, 255, 128]);
    assert.deepEqual(await bytes("typed"), [1, 2, 3, 4]);
    assert.deepEqual(await bytes("int16"), [1, 0, 255, 255]);
    assert.deepEqual(await bytes("view"), [9, 1, 2]);
    assert.equal(await ns.get("stream"), "abc");
  });

  it("stores 0-byte values from every kind of input, and reads them back as empty", async () => {
    const ns = kv.namespace("empty");
    await ns.put("s", "");
    await ns.put("b", new ArrayBuffer(0));
    await ns.put("stream", streamOf());
    for (const key of ["s", "b", "stream"]) {
      assert.equal(await ns.get(key), "", key);
      assert.equal((await ns.get(key, "arrayBuffer")).byteLength, 0, key);
      assert.equal((await readAll(await ns.get(key, "stream"))).length, 0, key);
    }
    assert.deepEqual((await ns.list()).keys.map((k) => k.name), ["b", "s", "stream"]);
  });

  it("round-trips a 25 MiB value, and refuses one byte more before storing anything", async () => {
    const ns = kv.namespace("large");
    const value = new Uint8Array(25 * MiB);
    for (let i = 0; i < value.length; i += 4093) value[i] = i % 251;
    await ns.put("big", value);
    assert.ok(Buffer.from(await ns.get("big", "arrayBuffer")).equals(value));
    assert.ok((await readAll(await ns.get("big", "stream"))).equals(value));
    const over = await ns.put("over", new Uint8Array(25 * MiB + 1)).catch((e) => e);
    assert.ok(over instanceof ValueTooLargeError && over instanceof TooLarge, String(over));
    assert.equal(over.status, 413);
    assert.equal(await ns.get("over"), null);
  });

  it("streams a large value up in chunks", async () => {
    const ns = kv.namespace("large");
    const chunk = new Uint8Array(MiB).fill(7);
    await ns.put("streamed", streamOf(...Array.from({ length: 5 }, () => chunk)));
    const back = new Uint8Array(await ns.get("streamed", "arrayBuffer"));
    assert.equal(back.length, 5 * MiB);
    assert.ok(back.every((b) => b === 7));
  });

  it("refuses keys a URL cannot carry before sending", async () => {
    const ns = kv.namespace("keys");
    for (const key of ["", ".", ".."]) {
      await assert.rejects(ns.put(key, "x"), InvalidKeyError);
      await assert.rejects(ns.get(key), InvalidKeyError);
      await assert.rejects(ns.delete(key), InvalidKeyError);
    }
  });

  it("sends metadata ASCII-escaped, and the node refuses lone surrogates", async () => {
    const ns = kv.namespace("meta2");
    await ns.put("k", "v", { metadata: { emoji: "🚀", cjk: "漢字" } });
    assert.deepEqual((await ns.getWithMetadata("k")).metadata, { emoji: "🚀", cjk: "漢字" });
    await assert.rejects(ns.put("bad", "v", { metadata: { bad: "\ud800" } }), InvalidUnicodeError);
    await assert.rejects(ns.put("bad", "v", { metadata: "not an object" }), InvalidMetadataError);
    await assert.rejects(ns.put("bad", "v", { metadata: { big: "m".repeat(1100) } }), MetadataTooLargeError);
    assert.equal(await ns.get("bad"), null);
  });
});

describe("delete and list", () => {
  it("deletes, and lists every key across pages", async () => {
    const ns = kv.namespace("listing");
    const names = Array.from({ length: 25 }, (_, i) => `k${String(i).padStart(2, "0")}`);
    await ns.bulk(names.map((key) => ({ op: "put", key, value: key, metadata: { i: key } })));
    await ns.delete("k03");
    const seen = [];
    let page = await ns.list({ limit: 10 });
    for (;;) {
      seen.push(...page.keys);
      if (page.list_complete) break;
      assert.equal(page.keys.length, 10);
      page = await ns.list({ limit: 10, cursor: page.cursor });
    }
    assert.deepEqual(seen.map((k) => k.name), names.filter((n) => n !== "k03"));
    assert.deepEqual(seen[0], { name: "k00", metadata: { i: "k00" } }); // no expiration: left out, as Workers KV does
    assert.equal("cursor" in page, false);
  });
});

describe("get-many", () => {
  it("reads many keys as a Map, fetching the values past the node's answer budget", async () => {
    const ns = kv.namespace("many");
    const large = "x".repeat(600); // two of these pass the 1000-byte budget
    await ns.bulk([
      { op: "put", key: "a", value: large + "a", metadata: { n: 1 } },
      { op: "put", key: "b", value: large + "b" },
      { op: "put", key: "c", value: large + "c", expirationTtl: 300 },
      { op: "put", key: "small", value: "s" },
    ]);
    const values = await ns.get(["a", "b", "c", "small", "none"]);
    assert.deepEqual([...values.entries()], [["a", large + "a"], ["b", large + "b"], ["c", large + "c"], ["small", "s"], ["none", null]]);
    const entries = await ns.getWithMetadata(["a", "c", "none"], "text");
    assert.deepEqual(entries.get("a").metadata, { n: 1 });
    assert.equal(entries.get("a").value, large + "a");
    assert.ok(entries.get("c").expiration > Date.now() / 1000);
    assert.equal(entries.get("none").value, null);
    const bytes = await ns.get(["small"], "arrayBuffer");
    assert.equal(Buffer.from(bytes.get("small")).toString(), "s");
  });
});

describe("documents", () => {
  it("put, get, patch, query pages, delete", async () => {
    const users = kv.docs("users");
    for (let i = 0; i < 7; i++) await users.put(`u${i}`, { age: 20 + i, team: i % 2 ? "odd" : "even" });
    const ann = await users.get("u3");
    assert.deepEqual(ann.doc, { age: 23, team: "odd" });
    assert.match(ann.version, /^[0-9a-f]{32}$/);
    await users.patch("u3", { team: null, city: "Oslo" });
    assert.deepEqual((await users.get("u3")).doc, { age: 23, city: "Oslo" });
    const all = [];
    for await (const d of users.query({ where: [["age", ">=", 22]], orderBy: "-age", pageSize: 2 })) all.push(d.id);
    assert.deepEqual(all, ["u6", "u5", "u4", "u3", "u2"]);
    const firstThree = [];
    for await (const d of users.query({ where: { team: "even" }, orderBy: "age", limit: 3, pageSize: 2 })) firstThree.push(d.id);
    assert.deepEqual(firstThree, ["u0", "u2", "u4"]);
    await users.delete("u3");
    assert.equal(await users.get("u3"), null);
    await assert.rejects(users.patch("u3", { a: 1 }), NotFound);
  });

  it("declares and lists indexes; refuses ids a URL cannot carry", async () => {
    const people = kv.docs("people");
    const index = await people.createIndex("address.city");
    assert.equal(index.field, "address.city");
    assert.deepEqual((await people.indexes()).map((i) => i.field), ["address.city"]);
    for (const id of ["", ".", ".."]) await assert.rejects(people.get(id), { code: "invalid_document_id" });
  });

  it("sends document text as the node reads it, lone surrogates refused", async () => {
    await assert.rejects(kv.docs("users").put("bad", { name: "\udc00" }), InvalidUnicodeError);
  });
});
