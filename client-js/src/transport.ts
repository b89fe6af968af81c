/**
 * Sending one request: auth, session bookmarks, timeout, retries with backoff,
 * error mapping. Every feature module (key-value, documents, counters and sets,
 * watch) builds a `Call` and hands it to `Transport.run` (a watch's stream: `open`).
 */
import { BOOKMARK_HEADER, BookmarkSet } from "./bookmarks.js";
import { EdgeKVError, TransportError, type ApiError } from "./errors.js";
import { errorOf } from "./mapping.js";

export interface ClientOptions {
  /** The node's base URL, e.g. `https://fra.edgekv.example` or `http://127.0.0.1:8787`. */
  url: string;
  /** A bearer token (`ekv_...`); none for a node in protected mode. */
  token?: string;
  /** Milliseconds each attempt may take until its answer is read (default 10 000). */
  timeout?: number;
  /** How often an idempotent request is sent again (default 2). */
  retries?: number;
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
}

/** One request, built by a feature module. */
export interface Call {
  method: string;
  /** Path below the URL, already percent-encoded, with its query string. */
  path: string;
  headers?: Record<string, string>;
  body?: BodyInit | null;
  /** Safe to send again after a transport failure (see `shouldRetry`). */
  idempotent?: boolean;
  /** The caller's signal: aborting it aborts the request, which is then not retried. */
  signal?: AbortSignal | undefined;
}

/** Milliseconds of the first retry's backoff ceiling; it doubles with each attempt. */
export const RETRY_BASE_MS = 50;

/** Milliseconds before retry `attempt` (1, 2, ...): exponential, with full jitter. */
export const retryDelay = (attempt: number): number => Math.random() * RETRY_BASE_MS * 2 ** attempt;

/**
 * Whether a failed call may be sent again: idempotent, and the node unreachable or
 * stopping (never a 4xx, never a write that may have been applied, never a stream body).
 */
export function shouldRetry(call: Call, error: unknown): boolean {
  if (!call.idempotent || call.signal?.aborted || call.body instanceof ReadableStream) return false;
  return error instanceof TransportError || (error as ApiError).code === "unavailable";
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class Transport {
  readonly url: string;
  readonly options: ClientOptions;
  /** The session's bookmarks; null for a client that is not a session. */
  readonly bookmarks: BookmarkSet | null;
  readonly #base: string;
  readonly #auth: Record<string, string>;
  readonly #fetch: typeof fetch;

  constructor(options: ClientOptions, bookmarks: BookmarkSet | null = null) {
    this.options = options;
    this.url = options.url;
    this.#base = options.url.replace(/\/+$/, "");
    this.#auth = options.token ? { authorization: `Bearer ${options.token}` } : {};
    // Called through a wrapper: Workers throw on `fetch` called with another `this`.
    const custom = options.fetch;
    this.#fetch = custom ? (input, init) => custom(input, init) : (input, init) => fetch(input, init);
    this.bookmarks = bookmarks;
  }

  /**
   * Send `call` and hand its answer to `read` (within the same timeout); map error
   * answers to errors, retrying as `shouldRetry` allows.
   */
  async run<T>(call: Call, read: (response: Response) => Promise<T> | T): Promise<T> {
    const retries = this.options.retries ?? 2;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#once(call, read);
      } catch (error) {
        if (attempt >= retries || !shouldRetry(call, error)) throw error;
      }
      await sleep(retryDelay(attempt + 1));
    }
  }

  /** Send `call` and return its decoded JSON answer, noting a write's bookmark. */
  json<T = unknown>(call: Call): Promise<T> {
    return this.run(call, async (response) => {
      const answer = await response.json();
      if (this.bookmarks && typeof answer?.bookmark === "string") this.bookmarks.add(answer.bookmark);
      return answer as T;
    });
  }

  /**
   * Send `call` once (no retries: a watch has its own) and return its answer as soon
   * as its headers arrive, for the caller to read its body (the timeout covers only
   * that wait; the caller cancels the body when `call.signal` aborts).
   */
  open(call: Call): Promise<Response> {
    return this.#once(call, (response) => response);
  }

  /** The same client (token, options, session) at another PoP. */
  at(url: string): Transport {
    return new Transport({ ...this.options, url }, this.bookmarks);
  }

  async #once<T>(call: Call, read: (response: Response) => Promise<T> | T): Promise<T> {
    const headers: Record<string, string> = { ...this.#auth, ...call.headers };
    // Sent even when empty: it marks a session read, answered with what the read saw.
    if (this.bookmarks) headers[BOOKMARK_HEADER] = this.bookmarks.toString();
    const deadline = new AbortController();
    const outer = call.signal;
    const abort = () => deadline.abort(outer?.reason);
    outer?.addEventListener("abort", abort, { once: true });
    const timeout = this.options.timeout ?? 10_000;
    const timer = setTimeout(() => deadline.abort(new TransportError(`timed out after ${timeout} ms`)), timeout);
    const init: RequestInit & { duplex?: string } = { method: call.method, headers, signal: deadline.signal };
    if (call.body != null) {
      init.body = call.body;
      if (call.body instanceof ReadableStream) init.duplex = "half"; // required for stream bodies
    }
    try {
      const response = await this.#fetch(this.#base + call.path, init);
      const seen = this.bookmarks && response.headers.get(BOOKMARK_HEADER);
      if (seen) this.bookmarks!.add(seen);
      if (response.status >= 400) throw await errorOf(response);
      return await read(response);
    } catch (error) {
      if (outer?.aborted) throw outer.reason; // the caller's own abort, as fetch would
      if (error instanceof EdgeKVError) throw error;
      if (deadline.signal.aborted) throw deadline.signal.reason;
      throw new TransportError(`${call.method} ${this.url}${call.path}: ${String(error)}`, { cause: error });
    } finally {
      clearTimeout(timer);
      outer?.removeEventListener("abort", abort);
    }
  }
}
