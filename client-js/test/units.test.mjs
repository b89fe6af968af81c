// What needs no node: the error classes of every code, bookmarks, filters; and the retry,
// timeout and abort rules, against a local HTTP server that misbehaves on purpose.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { describe, it } from "node:test";
import * as edgekv from "../dist/index.js";

const { EdgeKV, BookmarkSet, ERROR_CLASSES, errorFor, filters, ApiError, TransportError } = edgekv;
const table = JSON.parse(readFileSync(new URL("../../replication/edgekv_replication/codes.json", import.meta.url), "utf8"));
const FAMILY = { 400: "InvalidRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "PreconditionFailed", 413: "TooLarge", 503: "Unavailable", 507: "StorageFull" };

describe("error classes", () => {
  it("has one class per code of the shared table, in its status's family", () => {
    assert.deepEqual(Object.keys(ERROR_CLASSES), table.map((row) => row.code));
    for (const { code, status } of table) {
      const error = errorFor(code, "why", status, { extra: 1 });
      const name = code.replace(/(^|_)([a-z])/g, (_, __, c) => c.toUpperCase()) + "Error";
      assert.ok(error instanceof ERROR_CLASSES[code], code);
      assert.equal(edgekv[name], ERROR_CLASSES[code], `${name} is exported`);
      assert.equal(error.name, name);
      assert.equal(error.code, code);
      assert.equal(error.status, status);
      assert.equal(error.message, `${code}: why`);
      assert.deepEqual(error.details, { extra: 1 });
      const family = FAMILY[status] ?? (status >= 500 ? "Unavailable" : "ApiError");
      assert.ok(error instanceof edgekv[family], `${code} is a ${family}`);
      assert.ok(error instanceof ApiError && error instanceof edgekv.EdgeKVError && error instanceof Error);
      // No code's class is another's: each can be caught alone.
      for (const other of table) if (other.code !== code) assert.ok(!(error instanceof ERROR_CLASSES[other.code]));
    }
  });

  it("classes a code it does not know by its status", () => {
    assert.ok(errorFor("future_code", "m", 400) instanceof edgekv.InvalidRequest);
    assert.ok(errorFor("future_code", "m", 409) instanceof edgekv.PreconditionFailed);
    assert.ok(errorFor("future_code", "m", 502) instanceof edgekv.Unavailable);
    const other = errorFor("future_code", "m", 418);
    assert.equal(other.constructor, ApiError);
    assert.equal(other.name, "FutureCodeError");
  });

  it("reads a precondition's current version", () => {
    const error = errorFor("precondition_failed", "m", 409, { version: "ab", failed: [] });
    assert.equal(error.currentVersion, "ab");
    assert.equal(errorFor("precondition_failed", "m", 409, { version: null }).currentVersion, null);
  });
});

describe("bookmarks", () => {
  const b = (node, seq) => `b1.${node}.${seq}.1a2b`;

  it("keeps the newest bookmark of each node", () => {
    const set = new BookmarkSet();
    set.add(b("aa", "5"));
    set.add(b("aa", "3"));
    set.add(`${b("bb", "1")}, ${b("aa", "10")}`);
    assert.equal(set.toString(), `${b("aa", "10")},${b("bb", "1")}`);
    set.add(b("00aa", "f")); // the same node, written with a leading zero
    assert.equal(set.size, 2);
  });

  it("drops what EdgeKV did not issue, and keeps at most 32 nodes", () => {
    const set = new BookmarkSet(`garbage,b1.xyz.1.1,b2.1.1.1,b1.1.1,${b("aa", "1")},b1.${"f".repeat(17)}.1.1`);
    assert.equal(set.toString(), b("aa", "1"));
    for (let i = 0; i < 40; i++) set.add(b(i.toString(16) + "0", "1"));
    assert.equal(set.size, 32);
  });
});

describe("document filters", () => {
  it("writes each form as the API's where text", () => {
    assert.deepEqual(filters("age>=30"), ["age>=30"]);
    assert.deepEqual(filters(["zip", "==", "0150"]), ['zip=="0150"']);
    assert.deepEqual(filters([["age", ">", 3], "team==red"]), ["age>3", "team==red"]);
    assert.deepEqual(filters({ team: "red", n: null }), ['team=="red"', "n==null"]);
    assert.deepEqual(filters(["a==1", "b==2", "c==3"]), ["a==1", "b==2", "c==3"]);
    assert.throws(() => filters([["age", "=>", 3]]), TypeError);
  });
});

/** A local server answering every request with `answer(request)` (or never, when it returns null). */
async function withServer(answer, body) {
  const seen = [];
  const server = createServer((request, response) => {
    seen.push(`${request.method} ${request.url}`);
    request.resume();
    const reply = answer(request);
    if (reply) response.writeHead(reply.status, { "content-type": "application/json" }).end(reply.body);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    return await body(`http://127.0.0.1:${server.address().port}`, seen);
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

const stopping = () => ({ status: 503, body: JSON.stringify({ error: { code: "unavailable", message: "stopping" } }) });

describe("retries, timeouts and aborts", () => {
  it("retries idempotent requests while the node is stopping, and nothing else", async () => {
    await withServer(stopping, async (url, seen) => {
      const ns = new EdgeKV({ url, retries: 2 }).namespace("n");
      await assert.rejects(ns.get("k"), edgekv.UnavailableError);
      await assert.rejects(ns.put("k", "v"), edgekv.UnavailableError);
      await assert.rejects(ns.delete("k"), edgekv.UnavailableError);
      await assert.rejects(ns.get(["a", "b"]), edgekv.UnavailableError);
      assert.equal(seen.length, 12, seen.join("\n"));
      seen.length = 0;
      await assert.rejects(ns.put("k", "v", { ifMatch: "*" }), edgekv.UnavailableError);
      await assert.rejects(ns.put("k", "v", { ifNoneMatch: true }), edgekv.UnavailableError);
      await assert.rejects(ns.delete("k", { ifMatch: "ab" }), edgekv.UnavailableError);
      await assert.rejects(ns.bulk([{ op: "delete", key: "k" }]), edgekv.UnavailableError);
      await assert.rejects(ns.transaction([{ op: "delete", key: "k" }]), edgekv.UnavailableError);
      await assert.rejects(ns.put("k", new ReadableStream({ start: (c) => c.close() })), edgekv.UnavailableError);
      assert.equal(seen.length, 6, seen.join("\n"));
    });
  });

  it("does not retry other errors, such as bookmark_not_reached", async () => {
    const notReached = () => ({ status: 503, body: JSON.stringify({ error: { code: "bookmark_not_reached", message: "later" } }) });
    await withServer(notReached, async (url, seen) => {
      const error = await new EdgeKV({ url }).namespace("n").get("k").catch((e) => e);
      assert.ok(error instanceof edgekv.BookmarkNotReachedError && error instanceof edgekv.Unavailable);
      assert.equal(seen.length, 1);
    });
  });

  it("maps an answer that is not the error shape by its status", async () => {
    await withServer(() => ({ status: 502, body: "<html>bad gateway</html>" }), async (url) => {
      const error = await new EdgeKV({ url, retries: 0 }).namespace("n").get("k").catch((e) => e);
      assert.ok(error instanceof edgekv.UnavailableError, String(error));
      assert.equal(error.status, 502);
      assert.match(error.message, /bad gateway/);
    });
  });

  it("times out each attempt, and retries it when idempotent", async () => {
    await withServer(() => null, async (url) => {
      // Attempts are counted as they are sent: under load one may time out before arriving.
      let attempts = 0;
      const counting = (input, init) => (attempts++, fetch(input, init));
      const ns = new EdgeKV({ url, timeout: 100, retries: 1, fetch: counting }).namespace("n");
      const error = await ns.get("k").catch((e) => e);
      assert.ok(error instanceof TransportError, String(error));
      assert.match(error.message, /timed out after 100 ms/);
      assert.equal(attempts, 2);
      attempts = 0;
      await assert.rejects(ns.bulk([{ op: "delete", key: "k" }]), TransportError);
      assert.equal(attempts, 1, "a bulk write is never sent again");
    });
  });

  it("rethrows the caller's abort as it is, without retrying", async () => {
    // The server aborts the caller's controller once the request has reached it, so the
    // abort lands while the client waits for the answer, whatever the machine's load.
    let controller, reason;
    const abortOnArrival = () => {
      controller.abort(reason);
      return null;
    };
    await withServer(abortOnArrival, async (url, seen) => {
      const ns = new EdgeKV({ url, retries: 2 }).namespace("n");
      controller = new AbortController();
      reason = new DOMException("the caller gave up", "TimeoutError");
      const error = await ns.get("k", { type: "text", signal: controller.signal }).catch((e) => e);
      assert.equal(error.name, "TimeoutError");
      assert.equal(seen.length, 1);
      [controller, reason] = [new AbortController(), undefined];
      await assert.rejects(ns.put("k", "v", { signal: controller.signal }), { name: "AbortError" });
      assert.equal(seen.length, 2);
    });
  });

  it("reports an unreachable node as a TransportError", async () => {
    const url = await withServer(() => null, async (url) => url); // closed once this returns
    const error = await new EdgeKV({ url, retries: 1 }).namespace("n").get("k").catch((e) => e);
    assert.ok(error instanceof TransportError, String(error));
    assert.ok(error.cause, "the fetch error is kept as the cause");
  });

  it("uses the fetch it is given", async () => {
    const calls = [];
    const fake = async (input, init) => {
      calls.push([String(input), init.method, new Headers(init.headers).get("authorization")]);
      return new Response("v", { status: 200 });
    };
    assert.equal(await new EdgeKV({ url: "http://pop.example/", token: "t", fetch: fake }).namespace("n s").get("a/b c"), "v");
    assert.deepEqual(calls, [["http://pop.example/v1/kv/n%20s/a/b%20c", "GET", "Bearer t"]]);
  });
});
