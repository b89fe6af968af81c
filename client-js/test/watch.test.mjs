// Watch against real PoPs: snapshot then live changes; a stream cut mid-way (through a local
// TCP proxy) resumes with nothing lost and nothing repeated; failover to another PoP when the
// first is killed; an AbortSignal ends it and closes the stream; a refused token throws.
import assert from "node:assert/strict";
import { createServer, connect } from "node:net";
import { before, describe, it } from "node:test";
import { EdgeKV, Unauthorized } from "../dist/index.js";
import { credentials, startNode, startPair, status, waitFor } from "./nodes.mjs";

let a, b, creds;

before(async () => {
  creds = credentials();
  [a, b] = await startPair(creds);
});

const client = (node, url = node.url) => new EdgeKV({ url, token: node.token });
const text = (bytes) => new TextDecoder().decode(bytes);
const open = async (node) => (await status(node)).node.watch.watchers_open;

/** The next event of `events`, or a failure after `ms` (a hang is a failure, not a stuck test). */
async function next(events, ms = 20_000) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no watch event within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([events.next(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A TCP proxy to `node` whose connections `cut()` destroys (as a network failure would). */
async function proxyTo(node) {
  const target = new URL(node.url);
  const sockets = new Set();
  const server = createServer((inbound) => {
    const outbound = connect(Number(target.port), target.hostname);
    for (const [from, to] of [[inbound, outbound], [outbound, inbound]]) {
      sockets.add(from);
      from.on("error", () => to.destroy());
      from.on("close", () => {
        sockets.delete(from);
        to.destroy();
      });
      from.pipe(to);
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  server.unref();
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut: () => {
      const count = sockets.size;
      for (const socket of sockets) socket.destroy();
      return count;
    },
  };
}

describe("watch", () => {
  it("sends a snapshot, then ready, then the live changes, with values or their sizes", async () => {
    const ns = client(a).namespace("w-snap");
    await ns.put("k1", "one", { metadata: { n: 1 } });
    await ns.put("k2", "two");
    await ns.put("other", "x");
    const events = ns.watch({ prefix: "k", snapshot: true });
    const snapshot = [(await next(events)).value, (await next(events)).value];
    assert.deepEqual(snapshot.map((e) => [e.type, e.key, e.op, text(e.value)]), [
      ["change", "k1", "put", "one"],
      ["change", "k2", "put", "two"],
    ]);
    assert.deepEqual(snapshot[0].metadata, { n: 1 });
    const ready = (await next(events)).value;
    assert.equal(ready.type, "ready");
    assert.match(ready.token, /^w1\./);
    await ns.put("other", "not watched");
    await ns.delete("k1");
    const gone = (await next(events)).value;
    assert.deepEqual([gone.type, gone.key, gone.op, gone.value], ["change", "k1", "delete", undefined]);
    assert.ok(gone.version > snapshot[0].version, "a key's versions order as strings");
    await events.return();

    const sizes = ns.watch({ keys: ["k2"], includeValues: false, snapshot: true });
    const k2 = (await next(sizes)).value;
    assert.deepEqual([k2.key, k2.value, k2.valueBytes], ["k2", undefined, 3]);
    await sizes.return();
  });

  it("watches a collection's documents", async () => {
    const users = client(a).docs("w-users");
    const events = users.watch({ snapshot: true });
    assert.equal((await next(events)).value.type, "ready");
    await users.put("u1", { name: "Ada", langs: ["en"] });
    const change = (await next(events)).value;
    assert.deepEqual([change.key, change.op, change.value], ["u1", "put", { name: "Ada", langs: ["en"] }]);
    await events.return();
  });

  it("hands a session each change's bookmark, so its reads see what the watch saw", async () => {
    const session = client(a).session();
    const events = session.namespace("w-session").watch({ snapshot: true });
    assert.equal((await next(events)).value.type, "ready");
    assert.equal(session.bookmark, "");
    await client(a).namespace("w-session").put("k", "v");
    const event = (await next(events)).value;
    assert.match(event.bookmark, /^b1\./);
    assert.equal(session.bookmark, event.bookmark);
    await events.return();
  });

  it("resumes a stream cut mid-way: no change lost, none repeated, in order", async () => {
    const proxy = await proxyTo(a);
    const writer = client(a).namespace("w-cut");
    const events = client(a, proxy.url).namespace("w-cut").watch({ snapshot: true, maxBackoff: 200 });
    assert.equal((await next(events)).value.type, "ready");
    const expected = Array.from({ length: 150 }, (_, i) => `k${String(i).padStart(3, "0")}`);
    const writing = (async () => {
      for (const key of expected) await writer.put(key, `v-${key}`);
    })();
    const seen = [];
    let cuts = 0;
    while (seen.length < expected.length) {
      const event = (await next(events)).value;
      if (event.type !== "change") continue;
      seen.push(event.key);
      assert.equal(text(event.value), `v-${event.key}`);
      // Cut every connection through the proxy (the watch's stream among them) now and then.
      if (seen.length % 30 === 0 && proxy.cut() > 0) cuts++;
    }
    await writing;
    await events.return();
    assert.ok(cuts >= 4, `the stream was cut ${cuts} times`);
    assert.deepEqual(seen, expected);
  });

  it("resumes at its PoP restarted on the same port (killed mid-stream): every change once", async () => {
    const first = await startNode(creds, "restarted");
    const writer = client(first).namespace("w-restart");
    const events = client(first).namespace("w-restart").watch({ snapshot: true, maxBackoff: 200 });
    assert.equal((await next(events)).value.type, "ready");
    const expected = Array.from({ length: 100 }, (_, i) => `r${String(i).padStart(3, "0")}`);
    for (const key of expected.slice(0, 50)) await writer.put(key, key);
    const seen = new Map();
    let restarted;
    while (seen.size < expected.length) {
      const event = (await next(events, 30_000)).value;
      if (event.type !== "change") continue;
      assert.ok(!seen.has(event.key), `${event.key} came twice`);
      seen.set(event.key, text(event.value));
      if (seen.size === 30) {
        first.stop(); // SIGKILL: what the node had not sent yet is lost with its socket
        const { port } = new URL(first.url);
        restarted = await startNode(creds, "restarted", [], { dataDir: first.dataDir, port: Number(port) });
        assert.equal(restarted.url, first.url);
        for (const key of expected.slice(50)) await writer.put(key, key);
      }
    }
    await events.return();
    assert.deepEqual([...seen.keys()].sort(), expected);
    for (const [key, value] of seen) assert.equal(value, key);
    // Leaving the loop closed the stream: the node counts it out at its next write to it.
    await writer.put("r-poke", "1");
    await waitFor(async () => (await open(restarted)) === 0, "the restarted node to count the watcher out");
  });

  it("ends when its AbortSignal aborts, and closes its stream", async () => {
    const ns = client(a).namespace("w-abort");
    // Streams of the tests before (one cut through a proxy) are counted out as their
    // connections close: counting from a number one of them may still leave would race.
    await waitFor(async () => (await open(a)) === 0, "the earlier watchers counted out");
    const before = 0;
    const controller = new AbortController();
    const events = ns.watch({ snapshot: true, signal: controller.signal });
    assert.equal((await next(events)).value.type, "ready");
    assert.equal(await open(a), before + 1);
    const pending = next(events);
    controller.abort();
    assert.deepEqual(await pending, { done: true, value: undefined });
    // The node notices a gone client at its next write to the stream: an event.
    await ns.put("poke", "1");
    await waitFor(async () => (await open(a)) === before, "the node to count the watcher out");
  });

  it("throws what retrying cannot mend: a refused token", async () => {
    const events = new EdgeKV({ url: a.url, token: "ekv_not_a_token" }).namespace("w").watch();
    await assert.rejects(next(events), Unauthorized);
  });

  it("fails over to the next PoP when its PoP dies, with nothing lost or repeated", async () => {
    const watcher = client(a).namespace("w-failover").watch({ snapshot: true, failover: [b.url], maxBackoff: 200 });
    assert.equal((await next(watcher)).value.type, "ready");
    // Written at B (it survives): A relays them to the watcher until A is killed.
    const writer = client(b).namespace("w-failover");
    const expected = Array.from({ length: 100 }, (_, i) => `f${String(i).padStart(3, "0")}`);
    const write = async (keys) => {
      for (const key of keys) await writer.put(key, key);
    };
    let writing = write(expected.slice(0, 50));
    const seen = new Map();
    while (seen.size < expected.length) {
      const event = (await next(watcher, 30_000)).value;
      if (event.type !== "change") continue;
      assert.ok(!seen.has(event.key), `${event.key} came twice`);
      seen.set(event.key, text(event.value));
      if (seen.size === 30) {
        a.stop();
        // Written once A is dead: these can only come from B.
        writing = writing.then(() => write(expected.slice(50)));
      }
    }
    await writing;
    await watcher.return();
    assert.deepEqual([...seen.keys()].sort(), expected);
    for (const [key, value] of seen) assert.equal(value, key);
  });
});
