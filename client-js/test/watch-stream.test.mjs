// Watch against a scripted feed (a `fetch` that answers what a node could): the SSE parsing
// of chunks cut anywhere (inside CRLF, inside a UTF-8 character), what each reconnection sends,
// the per-key version check, relist, the retry of a saturated PoP, an abort between events,
// and the read timeout of a silent stream.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { EdgeKV, SseParser } from "../dist/index.js";

const encoder = new TextEncoder();

/** An SSE body sent `size` (3) bytes at a time; left open unless `end`. */
function feed(text, end = true, size = 3) {
  const bytes = encoder.encode(text);
  return new ReadableStream({
    start(controller) {
      for (let i = 0; i < bytes.length; i += size) controller.enqueue(bytes.slice(i, i + size));
      if (end) controller.close();
    },
  });
}

const change = (id, item) => `event: change\r\n${id ? `id: ${id}\r\n` : ""}data: ${JSON.stringify(item)}\r\n\r\n`;

describe("watch stream", () => {
  it("parses SSE blocks as the WHATWG rules say", () => {
    const parser = new SseParser();
    assert.deepEqual(parser.feed(": comment\nevent: change\nid: t1\ndata: a\ndata:b\n"), []);
    assert.deepEqual(parser.feed("\nid: t2\n\ndata\nid: bad\0id\n\n"), [
      ["change", "a\nb", "t1"],
      ["id", "", "t2"],
      ["message", "", undefined],
    ]);
  });

  it("resumes with the last token, drops states not newer than delivered, starts afresh after relist", async () => {
    const requests = [];
    const answers = [
      () => new Response(JSON.stringify({ error: { code: "too_many_watchers", message: "busy" } }), { status: 429 }),
      () =>
        new Response(
          feed(
            ": hello\r\n\r\n" +
              change("t1", { key: "clé", op: "put", version: "02", value: "b25l", bookmark: null }) +
              'event: change\nid: t2\ndata: {"key":"k2","op":"put",\ndata: "version":"01","value_bytes":5}\n\n' +
              "id: t3\n\n",
          ),
        ),
      () =>
        new Response(
          feed(
            change("", { key: "clé", op: "put", version: "01", value: "b2xk" }) +
              change("", { key: "clé", op: "put", version: "02", value: "b25l" }) +
              change("t4", { key: "k3", op: "delete", version: "03", value: null }) +
              "event: relist\ndata: {}\n\n",
          ),
        ),
      () =>
        new Response(
          feed(
            change("", { key: "clé", op: "put", version: "01", value: "b2xk" }) +
              "event: ready\nid: t5\ndata: {}\n\n" +
              change("t6", { key: "k9", op: "put", version: "09", value: null }),
            false,
            1 << 20, // one chunk: the abort comes between two events of it
          ),
        ),
    ];
    const fetch = async (url, init) => {
      requests.push({ url, headers: init.headers });
      return answers[requests.length - 1]();
    };
    const controller = new AbortController();
    const ns = new EdgeKV({ url: "http://pop.test", token: "ekv_t", fetch }).namespace("ns 1");
    const got = [];
    for await (const event of ns.watch({ prefix: "k", snapshot: true, signal: controller.signal, maxBackoff: 20 })) {
      got.push(event);
      if (event.type === "ready") controller.abort();
    }
    const text = (bytes) => bytes && new TextDecoder().decode(bytes);
    assert.deepEqual(
      got.map((e) => [e.type, e.key, e.version, text(e.value), e.valueBytes, e.token]),
      [
        ["change", "clé", "02", "one", undefined, "t1"],
        ["change", "k2", "01", undefined, 5, "t2"],
        ["change", "k3", "03", undefined, undefined, "t4"],
        ["relist", undefined, undefined, undefined, undefined, undefined],
        ["change", "clé", "01", "old", undefined, undefined],
        ["ready", undefined, undefined, undefined, undefined, "t5"],
      ],
    );
    assert.equal(requests.length, 4);
    for (const { url, headers } of requests) {
      assert.ok(url.startsWith("http://pop.test/v1/kv/ns%201/_watch?prefix=k"), url);
      assert.equal(headers.authorization, "Bearer ekv_t");
      assert.equal(headers.accept, "text/event-stream");
    }
    // A snapshot on a fresh start only; a resume names where it got to.
    assert.deepEqual(
      requests.map(({ url, headers }) => [url.endsWith("&snapshot=true"), headers["last-event-id"]]),
      [[true, undefined], [true, undefined], [false, "t3"], [true, undefined]],
    );
  });

  it("counts a stream silent for readTimeout as broken and resumes", { timeout: 10_000 }, async () => {
    const seen = [];
    const fetch = async (url, init) => {
      seen.push(init.headers["last-event-id"]);
      // Open, one event, then silence (a half-open connection sends no heartbeat).
      return new Response(feed(change(`t${seen.length}`, { key: `k${seen.length}`, op: "put", version: "01" }), false));
    };
    const got = [];
    for await (const event of new EdgeKV({ url: "http://pop.test", fetch }).namespace("ns").watch({ readTimeout: 50, maxBackoff: 20 })) {
      got.push(event.key);
      if (got.length === 3) break;
    }
    assert.deepEqual(got, ["k1", "k2", "k3"]);
    assert.deepEqual(seen, [undefined, "t1", "t2"]);
  });
});
