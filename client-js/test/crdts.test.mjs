// Counters and sets against real nodes: two PoPs that replicate (sums and add-wins across
// them, sessions), and a node with a PostgreSQL upstream for bounded adds.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import {
  CounterOutOfBoundsError,
  CounterOverflowError,
  EdgeKV,
  EdgeSet,
  InvalidMemberError,
  InvalidRequest,
  PreconditionFailed,
  SetFullError,
  StrongNamespaceRequiredError,
  TooManyMembersError,
} from "../dist/index.js";
import { credentials, startNode, startPair, startStrongNode, waitFor } from "./nodes.mjs";

let a, b, lone, strong;

before(async () => {
  const creds = credentials();
  [a, b] = await startPair(creds, ["--max-set-members", "5", "--max-set-request-members", "4"]);
  lone = await startNode(creds, "lone", ["--peer-discovery", "false", "--bookmark-timeout", "0.3"]);
  strong = await startStrongNode(creds);
});

const client = (node) => new EdgeKV({ url: node.url, token: node.token, retries: 0 });

describe("counters", () => {
  it("adds, reads and resets; a counter never written is 0", async () => {
    const hits = client(a).counter("stats", "page:/home");
    assert.equal(await hits.value(), 0);
    assert.equal(await hits.add(), 1);
    assert.equal(await hits.add(41), 42);
    assert.equal(await hits.add(-2n), 40);
    assert.equal(await hits.value(), 40);
    const written = await hits.addWithResult(2, { ttl: 3600 });
    assert.equal(written.value, 42);
    assert.match(written.bookmark, /^b1\./);
    const reset = await hits.reset();
    assert.match(reset.bookmark, /^b1\./);
    assert.equal(await hits.value(), 0);
  });

  it("sums the adds of both PoPs at each of them", async () => {
    await client(a).counter("stats", "sum").add(5);
    await client(b).counter("stats", "sum").add(7, { expiration: 4102444800 });
    for (const node of [a, b]) {
      await waitFor(async () => (await client(node).counter("stats", "sum").value()) === 12, `12 at ${node.url}`);
    }
  });

  it("refuses what the node refuses, with the code's class", async () => {
    const counter = client(a).counter("stats", "big");
    await counter.add(2n ** 63n - 1n);
    const overflow = await counter.add(1).catch((e) => e);
    assert.ok(overflow instanceof CounterOverflowError && overflow instanceof InvalidRequest, String(overflow));
    assert.equal(overflow.status, 400);
    const bounded = await counter.add(1, { max: 10 }).catch((e) => e);
    assert.ok(bounded instanceof StrongNamespaceRequiredError, String(bounded));
    await assert.rejects(counter.add(1.5), TypeError); // refused before sending
    await assert.rejects(client(a).counter("stats", "..").value(), /invalid_key|a key is/);
  });

  it("bounds an add in a strong namespace: an exact quota", async () => {
    const quota = client(strong).counter("bank", "quota");
    assert.equal(await quota.add(2, { min: 0, max: 2 }), 2);
    assert.equal(await quota.add(-1, { min: 0 }), 1);
    assert.equal(await quota.add(-1, { min: 0 }), 0);
    const error = await quota.add(-1, { min: 0 }).catch((e) => e);
    assert.ok(error instanceof CounterOutOfBoundsError && error instanceof PreconditionFailed, String(error));
    assert.equal(error.status, 409);
    assert.equal(error.details.value, 0);
    assert.equal(await quota.value(), 0); // nothing was added
  });
});

describe("sets", () => {
  it("adds, removes, pages through members and clears", async () => {
    const tags = client(a).set("posts", "p1:tags");
    assert.ok(tags instanceof EdgeSet);
    assert.deepEqual(await tags.members(), { members: [], version: null, list_complete: true, cursor: null });
    assert.match((await tags.add(["red", "blue", "é", "green"])).bookmark, /^b1\./);
    await tags.remove(["blue"]);
    const all = await tags.members();
    assert.deepEqual(all.members, ["green", "red", "é"]); // by UTF-8 bytes
    assert.equal(all.list_complete, true);
    assert.notEqual(all.version, null);
    const first = await tags.members({ limit: 2 });
    assert.deepEqual([first.members, first.list_complete], [["green", "red"], false]);
    const rest = await tags.members({ limit: 2, cursor: first.cursor });
    assert.deepEqual([rest.members, rest.list_complete], [["é"], true]);
    assert.deepEqual((await tags.members({ prefix: "r" })).members, ["red"]);
    await tags.update(["blue"], ["red"]);
    assert.deepEqual((await tags.members()).members, ["blue", "green", "é"]);
    await tags.clear();
    assert.deepEqual((await tags.members()).members, []);
  });

  it("removes only the adds a PoP saw: an add made at the other PoP stays at both", async () => {
    await client(a).set("posts", "p2").add(["x"]);
    await waitFor(async () => (await client(b).set("posts", "p2").members()).members.includes("x"), "x at B");
    await client(a).set("posts", "p2").remove(["x"]);
    await client(b).set("posts", "p2").add(["x", "y"]); // whether or not A's remove has reached B
    for (const node of [a, b]) {
      await waitFor(async () => {
        const page = await client(node).set("posts", "p2").members();
        return page.members.join() === "x,y";
      }, `x and y at ${node.url}`);
    }
  });

  it("refuses bad members, too many of them and a full set, applying nothing", async () => {
    const set = client(a).set("posts", "limits");
    const bad = await set.add(["ok", "a\u0000b"]).catch((e) => e);
    assert.ok(bad instanceof InvalidMemberError && bad instanceof InvalidRequest, String(bad));
    const many = await set.add(["1", "2", "3", "4", "5"]).catch((e) => e);
    assert.ok(many instanceof TooManyMembersError, String(many));
    await set.add(["1", "2", "3", "4"]);
    await set.add(["5"]);
    const full = await set.add(["6"]).catch((e) => e);
    assert.ok(full instanceof SetFullError && full instanceof PreconditionFailed, String(full));
    assert.equal(full.status, 409);
    assert.deepEqual((await set.members()).members, ["1", "2", "3", "4", "5"]);
  });
});

describe("counters and sets in sessions", () => {
  it("read their own writes at the other PoP", async () => {
    const session = client(a).session();
    const remote = session.at(b.url);
    let seen = 0;
    for (let i = 1; i <= 5; i++) {
      await session.counter("cart", "items").add(1);
      await session.set("cart", "skus").add([`sku-${i}`]);
      // B waits for the writes (or, past bookmark_timeout, refuses): never an older answer.
      try {
        assert.equal(await remote.counter("cart", "items").value(), i);
        assert.equal((await remote.set("cart", "skus").members()).members.length, i);
        seen++;
      } catch (error) {
        if (error?.code !== "bookmark_not_reached") throw error;
      }
    }
    assert.ok(seen > 0, "replication within bookmark_timeout: some reads at B succeed");
  });

  it("fail with bookmark_not_reached where the write cannot arrive", async () => {
    const session = client(a).session();
    await session.counter("cart", "lonely").add(3);
    const counterError = await session.at(lone.url).counter("cart", "lonely").value().catch((e) => e);
    assert.equal(counterError.code, "bookmark_not_reached");
    const setSession = client(a).session();
    await setSession.set("cart", "lonely-set").add(["m"]);
    const setError = await setSession.at(lone.url).set("cart", "lonely-set").members().catch((e) => e);
    assert.equal(setError.code, "bookmark_not_reached");
    // Not a session: the lone PoP's own copy, where nothing arrived.
    assert.equal(await client(lone).counter("cart", "lonely").value(), 0);
  });
});
