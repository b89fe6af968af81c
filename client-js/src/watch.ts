/**
 * Watch: a namespace's or a collection's changes as an async iterator over the
 * node's Server-Sent Events feed (`GET /v1/{kv|docs}/{space}/_watch`), read with
 * `fetch` and a `ReadableStream` (`EventSource` cannot send the bearer header).
 *
 * The iterator follows one cursor, as the Python client's `WatchCursor` does: the
 * token of the last event received, the PoPs to try in turn, and the newest version
 * delivered per key. A stream that ends for any reason (the PoP stops, the network
 * fails, the node cut a watcher that fell behind) is opened again with the token,
 * at the next PoP, after a backoff; the node sends what the watcher has not had.
 * Events a resume may bring again, or older than what was delivered (another PoP
 * lagging), are dropped by version, so the iterator never repeats a state or goes back.
 */
import { fromBase64, query, segment } from "./encoding.js";
import { ApiError, Unavailable } from "./errors.js";
import type { Transport } from "./transport.js";

export interface WatchOptions {
  /** Only keys (document ids) under this prefix. */
  prefix?: string;
  /** Only these keys (at most 100). */
  keys?: string[];
  /** Send values (default true); without them a change carries `valueBytes`. */
  includeValues?: boolean;
  /** First every live key (then a `ready` event), then the changes. */
  snapshot?: boolean;
  /** Resume from a token saved earlier (`event.token`). */
  after?: string;
  /** PoPs to move to, in turn, when a stream ends or cannot open. */
  failover?: string[];
  /** Milliseconds the backoff between streams grows to (default 5 000). */
  maxBackoff?: number;
  /** Milliseconds without a byte (heartbeats come every 15 s) before the stream counts as broken (default 60 000). */
  readTimeout?: number;
  /** Aborting it ends the watch: the iterator returns. */
  signal?: AbortSignal;
}

/**
 * One event. `change`: a key's new state. `ready`: the snapshot or catch-up is done,
 * what follows is live. `relist`: the PoP cannot resume this watch without a gap;
 * drop what was built from it (the watch goes on afresh, with a snapshot if asked).
 */
export interface WatchEvent<Value> {
  type: "change" | "ready" | "relist";
  /** The key (document id) of a change. */
  key?: string;
  op?: "put" | "delete" | "expire";
  /** The key's version: versions of a key order as strings. */
  version?: string;
  /** The bytes of an entry, the document of a collection; absent when left out or deleted. */
  value?: Value;
  /** The value's size when the node left it out (over its inline limit, or not asked for). */
  valueBytes?: number;
  metadata?: unknown;
  /** Epoch seconds when a live entry expires; null when it does not. */
  expiration?: number | null;
  /** Read-your-writes bookmark of the change at the PoP that sent it (a session keeps it). */
  bookmark?: string;
  /** Resume token after this event (pass as `after` to resume, anywhere). */
  token?: string;
}

/** Keys whose newest delivered version a watch remembers (to drop repeats after a resume). */
const TRACKED_KEYS = 1_000_000;

type Block = [type: string, data: string, id: string | undefined];

/**
 * Server-Sent Events from text as it arrives (the WHATWG rules). A block with an
 * id and no data (a heartbeat carrying a newer token) comes out as type `id`.
 */
export class SseParser {
  #buffer = "";
  #event = "";
  #data: string[] = [];
  #id: string | undefined;

  feed(text: string): Block[] {
    const done: Block[] = [];
    const lines = (this.#buffer + text).split("\n");
    this.#buffer = lines.pop()!;
    for (let line of lines) {
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (!line) {
        if (this.#data.length) done.push([this.#event || "message", this.#data.join("\n"), this.#id]);
        else if (this.#id !== undefined) done.push(["id", "", this.#id]);
        this.#event = "";
        this.#data = [];
        this.#id = undefined;
      } else if (line[0] !== ":") {
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value[0] === " ") value = value.slice(1);
        if (name === "event") this.#event = value;
        else if (name === "data") this.#data.push(value);
        else if (name === "id" && !value.includes("\0")) this.#id = value;
      }
    }
    return done;
  }
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });

/** A refusal to retry elsewhere: the PoP is saturated (429) or stopping. */
const passing = (error: unknown) =>
  !(error instanceof ApiError) || error instanceof Unavailable || error.status === 429;

/**
 * The events of `kind` (`kv` or `docs`) space `space`, for ever (until `signal` aborts
 * or the caller stops iterating). Throws only what retrying cannot mend: a refused
 * token or scope, a bad request.
 */
export async function* watch<Value>(
  transport: Transport,
  kind: "kv" | "docs",
  space: string,
  options: WatchOptions = {},
): AsyncGenerator<WatchEvent<Value>, void, undefined> {
  const { signal, maxBackoff = 5000, readTimeout = 60_000 } = options;
  const pops = [transport, ...(options.failover ?? []).map((url) => transport.at(url))];
  const versions = new Map<string, string>();
  let token = options.after;
  let at = 0;
  let failures = 0;
  while (!signal?.aborted) {
    const pairs: [string, unknown][] = [["prefix", options.prefix]];
    for (const key of options.keys ?? []) pairs.push(["keys", key]);
    if (options.includeValues === false) pairs.push(["include_values", "false"]);
    // A snapshot only on a fresh start: a resumed stream sends what was missed.
    if (options.snapshot && !token) pairs.push(["snapshot", "true"]);
    const headers: Record<string, string> = { accept: "text/event-stream" };
    if (token) headers["last-event-id"] = token;
    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const cancel = () => void reader?.cancel().catch(() => {});
    try {
      const response = await pops[at]!.open({
        method: "GET",
        path: `/v1/${kind}/${segment(space)}/_watch${query(pairs)}`,
        headers,
        signal,
      });
      reader = response.body!.getReader();
      signal?.addEventListener("abort", cancel, { once: true });
      const parser = new SseParser();
      const decoder = new TextDecoder();
      for (;;) {
        // A connection that went silent (no heartbeat) is broken without saying so.
        timer = setTimeout(cancel, readTimeout);
        const { done, value } = await reader.read();
        clearTimeout(timer); // not while the caller holds an event
        if (done || signal?.aborted) break;
        for (const [type, data, id] of parser.feed(decoder.decode(value, { stream: true }))) {
          if (signal?.aborted) return; // aborted while the caller held an event of this chunk
          // Parsed before the token moves past it: an event that does not parse is asked for again.
          const item = type === "change" ? JSON.parse(data) : undefined;
          if (id !== undefined) token = id;
          if (item) {
            const key = String(item.key);
            const version = String(item.version);
            // Versions are fixed-width hex of (hlc, node): their text order is their order.
            const seen = versions.get(key);
            if (seen !== undefined && version <= seen) continue;
            versions.delete(key);
            versions.set(key, version);
            if (versions.size > TRACKED_KEYS) versions.delete(versions.keys().next().value!);
            if (item.bookmark) transport.bookmarks?.add(item.bookmark);
            let payload = item.value;
            if (payload != null && kind === "kv") payload = fromBase64(payload);
            yield {
              type: "change",
              key,
              op: item.op,
              version,
              value: payload ?? undefined,
              valueBytes: item.value_bytes ?? undefined,
              metadata: item.metadata,
              expiration: item.expiration,
              bookmark: item.bookmark ?? undefined,
              token: id,
            };
          } else if (type === "ready") {
            failures = 0; // reached the live part: backoff starts again from short
            yield { type, token: id };
          } else if (type === "relist") {
            token = undefined;
            versions.clear();
            yield { type };
          }
        }
      }
    } catch (error) {
      if (signal?.aborted) return;
      if (!passing(error)) throw error;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", cancel);
      cancel(); // also when the caller stops iterating: the connection closes
    }
    // The stream ended or could not open: the next PoP, after a jittered backoff.
    at = (at + 1) % pops.length;
    const ceiling = Math.min(maxBackoff, 50 * 2 ** Math.min(++failures, 16));
    await sleep(ceiling / 2 + (Math.random() * ceiling) / 2, signal);
  }
}
