// Sessions across two real PoPs: a read at B after a write at A sees the write (waiting for
// replication) or fails with bookmark_not_reached; it never returns the older value.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { BookmarkNotReachedError, EdgeKV, Unavailable } from "../dist/index.js";
import { credentials, startNode, startPair, waitFor } from "./nodes.mjs";

let a, b, lone;

before(async () => {
  const creds = credentials();
  [a, b] = await startPair(creds);
  // A PoP that replicates with nobody: a bookmark from A can never be reached there.
  lone = await startNode(creds, "lone", ["--peer-discovery", "false", "--bookmark-timeout", "0.3"]);
});

const client = (node) => new EdgeKV({ url: node.url, token: node.token });

describe("sessions across PoPs", () => {
  it("reads its own writes at the other PoP, never an older value", async () => {
    const session = client(a).session();
    const atA = session.namespace("carts");
    const atB = session.at(b.url).namespace("carts");
    let seen = 0;
    for (let i = 0; i < 30; i++) {
      await atA.put("u1", `v${i}`);
      try {
        assert.equal(await atB.get("u1"), `v${i}`, "a session read returned an older value");
        seen++;
      } catch (error) {
        if (!(error instanceof BookmarkNotReachedError)) throw error;
      }
    }
    assert.ok(seen > 0, "replication within bookmark_timeout: some reads at B succeed");
  });

  it("fails with bookmark_not_reached where the write cannot arrive", async () => {
    const session = client(a).session();
    await session.namespace("carts").put("u2", "3 items");
    const error = await session.at(lone.url).namespace("carts").get("u2").catch((e) => e);
    assert.ok(error instanceof BookmarkNotReachedError && error instanceof Unavailable, String(error));
    assert.equal(error.status, 503);
    // A client that is not a session reads the lone PoP's copy: the key is not there.
    assert.equal(await client(lone).namespace("carts").get("u2"), null);
  });

  it("makes reads monotonic: what a read at B saw is required at the next PoP", async () => {
    const session = client(b).session();
    await client(a).namespace("mono").put("k", "x");
    await waitFor(async () => (await client(b).namespace("mono").get("k")) === "x", "k at B");
    const readAt = session.at(b.url);
    assert.equal(await readAt.namespace("mono").get("k"), "x");
    assert.match(readAt.bookmark, /^b1\.[0-9a-f]+\.[0-9a-f]+\.[0-9a-f]+$/, "the read's answer bookmark is kept");
    const error = await session.at(lone.url).namespace("mono").get("k").catch((e) => e);
    assert.ok(error instanceof BookmarkNotReachedError, String(error));
  });

  it("covers documents: a document written at A is read at B", async () => {
    const session = client(a).session();
    await session.docs("profiles").put("ann", { name: "Ann" });
    await session.docs("profiles").patch("ann", { city: "Oslo" });
    const doc = await session.at(b.url).docs("profiles").get("ann");
    assert.deepEqual(doc.doc, { name: "Ann", city: "Oslo" });
  });

  it("carries its bookmark between requests in a cookie or a header", async () => {
    const kvA = client(a);
    const first = kvA.sessionFrom(new Request("https://app.example/form", { method: "POST" }));
    assert.equal(first.bookmark, "");
    await first.namespace("forms").put("u3", "submitted");
    const cookie = first.sessionCookie();
    assert.match(cookie, /^edgekv_session=b1\.[^;]+; Path=\/; Max-Age=3600; HttpOnly; SameSite=Lax; Secure$/);

    // The user's next request, served at PoP B, carries the cookie back.
    const next = new Request("https://app.example/thanks", { headers: { cookie: `theme=dark; ${cookie.split(";")[0]}` } });
    const second = client(b).sessionFrom(next);
    assert.equal(second.bookmark, first.bookmark);
    assert.equal(await second.namespace("forms").get("u3"), "submitted");

    const viaHeader = client(b).sessionFrom(new Request("https://app.example/", { headers: { "EdgeKV-Bookmark": first.bookmark } }));
    assert.equal(viaHeader.bookmark, first.bookmark);
    const forged = client(b).sessionFrom(new Request("https://app.example/", { headers: { cookie: "edgekv_session=%E0%A4%A; x=1" } }));
    assert.equal(forged.bookmark, "", "a cookie that is not a bookmark starts a fresh session");
    assert.match(first.sessionCookie({ name: "s", maxAge: 60, path: "/app", secure: false }), /^s=.*; Path=\/app; Max-Age=60; HttpOnly; SameSite=Lax$/);
  });

  it("sends no bookmark header from a client that is not a session", async () => {
    const plain = client(a);
    await plain.namespace("plain").put("k", "v");
    assert.equal(plain.bookmark, "");
  });
});
