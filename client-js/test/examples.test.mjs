// The examples run as a reader would run them: the Workers-style handler served by
// examples/node-server.mjs, against two real PoPs.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { before, describe, it } from "node:test";
import { EdgeKV } from "../dist/index.js";
import { credentials, startPair } from "./nodes.mjs";

let app, a;

before(async () => {
  let b;
  [a, b] = await startPair(credentials());
  const env = { ...process.env, PORT: "0", EDGEKV_URL: a.url, EDGEKV_READ_URL: b.url, EDGEKV_TOKEN: a.token };
  const child = spawn(process.execPath, [new URL("../examples/node-server.mjs", import.meta.url).pathname], { env, stdio: ["ignore", "pipe", "inherit"] });
  process.on("exit", () => child.kill());
  app = await new Promise((resolve, reject) => {
    child.stdout.setEncoding("utf8").on("data", (line) => {
      const match = /serving (\S+)/.exec(line);
      if (match) resolve(match[1]);
    });
    child.on("exit", (code) => reject(new Error(`node-server exited (${code})`)));
  });
  child.unref();
  child.stdout.unref();
});

describe("examples/worker.mjs under Node", () => {
  it("buckets users into the A/B variants of a feature flag", async () => {
    const variants = async () => {
      const seen = {};
      for (let i = 0; i < 40; i++) {
        const response = await fetch(`${app}/?user=user-${i}`);
        assert.equal(response.status, 200);
        seen[response.headers.get("x-variant")] = (seen[response.headers.get("x-variant")] ?? 0) + 1;
      }
      return seen;
    };
    assert.deepEqual(await variants(), { A: 40 }, "no flag: everyone gets A");
    await new EdgeKV({ url: a.url, token: a.token }).namespace("flags").put("new-checkout", JSON.stringify({ enabled: true, rollout: 50 }));
    const split = await variants();
    assert.ok(split.A > 5 && split.B > 5, JSON.stringify(split));
    const again = await fetch(`${app}/?user=user-7`);
    const first = await fetch(`${app}/?user=user-7`);
    assert.equal(again.headers.get("x-variant"), first.headers.get("x-variant"), "a user's bucket is stable");
  });

  it("shows a form post's write at the other PoP right after the post", async () => {
    for (let i = 0; i < 5; i++) {
      const posted = await fetch(`${app}/profile?user=ann`, { method: "POST", body: new URLSearchParams({ name: `Ann ${i}` }), redirect: "manual" });
      assert.equal(posted.status, 303);
      const cookie = posted.headers.get("set-cookie").split(";")[0];
      const page = await fetch(new URL(posted.headers.get("location"), app), { headers: { cookie } });
      assert.equal(page.status, 200, await page.clone().text());
      assert.match(await page.text(), new RegExp(`<span id="name">Ann ${i}</span>`));
    }
  });
});
