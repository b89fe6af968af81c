/**
 * Counters and sets: `kv.counter(ns, key)` and `kv.set(ns, key)`, the replicated data
 * types of `/v1/counters` and `/v1/sets` (docs/api.md "Counters and sets"). Their
 * requests go through the client's `Transport`, so a session's bookmarks go with them.
 *
 * A bounded add refused in a strong namespace throws `CounterOutOfBoundsError` (a
 * `PreconditionFailed`) with the current value in `details.value`; an add to a full
 * set throws `SetFullError`.
 */
import { InvalidKeyError } from "./codes.js";
import { query, segment } from "./encoding.js";
import type { WriteResult } from "./kv.js";
import type { Call, Transport } from "./transport.js";

export interface CounterAddOptions {
  /** Strong namespaces: refuse the add (`counter_out_of_bounds`) if the value would go below this. */
  min?: number | bigint;
  /** Strong namespaces: refuse the add if the value would go above this. */
  max?: number | bigint;
  /** This PoP's contribution expires this many seconds from now. */
  ttl?: number;
  /** This PoP's contribution expires at this time (epoch seconds). */
  expiration?: number;
  signal?: AbortSignal;
}

/**
 * What a counter write answers: the value this PoP then sees, its bookmark and version.
 * `value` is absent when the token may write the namespace but not read it.
 */
export interface CounterWrite extends WriteResult {
  value?: number;
}

export interface SetMembersOptions {
  prefix?: string | null;
  /** 1 to the node's `max_list_limit` (its default). */
  limit?: number;
  cursor?: string | null;
  signal?: AbortSignal;
}

/** One page of a set's members, sorted by their UTF-8 bytes. */
export interface SetPage {
  members: string[];
  /** The set's version; null for a set never written. */
  version: string | null;
  list_complete: boolean;
  /** Where the next page starts; null on the last page. */
  cursor: string | null;
}

function path(kind: string, namespace: string, key: string): string {
  if (key === "" || key === "." || key === "..") {
    throw new InvalidKeyError("invalid_key", `a key is a non-empty string other than . and ..: ${JSON.stringify(key)}`, 400);
  }
  return `/v1/${kind}/${segment(namespace)}/${segment(key, true)}`;
}

/** A JSON integer, exactly (a bigint has no JSON form; a fraction is refused before sending). */
function integer(name: string, n: number | bigint): string {
  if (typeof n === "number" && !Number.isSafeInteger(n)) throw new TypeError(`${name} must be a safe integer or a bigint: ${n}`);
  return String(n);
}

// POSTs are never sent twice (a second add counts twice); a GET or a DELETE
// (reset, clear: removing what was observed) is, as the Python client does.
const post = (path: string, body: string, signal?: AbortSignal): Call =>
  ({ method: "POST", path, headers: { "content-type": "application/json" }, body, signal });

/** One counter: a sum of signed 64-bit adds made at every PoP. */
export class Counter {
  readonly namespace: string;
  readonly key: string;
  readonly #transport: Transport;

  constructor(transport: Transport, namespace: string, key: string) {
    this.#transport = transport;
    this.namespace = namespace;
    this.key = key;
  }

  // Built at each call, so a bad key rejects that call's promise (as the key-value calls do).
  get #path(): string {
    return path("counters", this.namespace, this.key);
  }

  /**
   * Add `n` (negative subtracts); resolves to the value this PoP sees right after.
   * Values past 2^53 come back rounded (a JS number); `addWithResult` has the bookmark too.
   * Resolves to `undefined` when the token may write but not read the namespace.
   */
  async add(n: number | bigint = 1, options: CounterAddOptions = {}): Promise<number | undefined> {
    return (await this.addWithResult(n, options)).value;
  }

  /** `add`, answering the value with the write's bookmark and version. */
  async addWithResult(n: number | bigint = 1, options: CounterAddOptions = {}): Promise<CounterWrite> {
    const fields = [`"add":${integer("n", n)}`];
    for (const name of ["min", "max", "ttl", "expiration"] as const) {
      const value = options[name];
      if (value != null) fields.push(`"${name}":${integer(name, value)}`);
    }
    return this.#transport.json(post(this.#path, `{${fields.join(",")}}`, options.signal));
  }

  /** The value at this PoP (0 for a counter never written). */
  async value(options: { signal?: AbortSignal } = {}): Promise<number> {
    const answer = await this.#transport.json<{ value: number }>({ method: "GET", path: this.#path, idempotent: true, signal: options.signal });
    return answer.value;
  }

  /** Remove every contribution this PoP has seen; adds made concurrently elsewhere survive. */
  async reset(options: { signal?: AbortSignal } = {}): Promise<WriteResult> {
    return this.#transport.json({ method: "DELETE", path: this.#path, idempotent: true, signal: options.signal });
  }
}

/** One add-wins set of strings (a member added at one PoP while removed at another stays). */
export class EdgeSet {
  readonly namespace: string;
  readonly key: string;
  readonly #transport: Transport;

  constructor(transport: Transport, namespace: string, key: string) {
    this.#transport = transport;
    this.namespace = namespace;
    this.key = key;
  }

  // Built at each call, so a bad key rejects that call's promise (as the key-value calls do).
  get #path(): string {
    return path("sets", this.namespace, this.key);
  }

  /** Add `members` (at most 1,000 a request, each 1 to 512 bytes of UTF-8 without NUL). */
  async add(members: string[], options: { signal?: AbortSignal } = {}): Promise<WriteResult> {
    return this.update(members, [], options);
  }

  /** Remove `members`: the adds of them this PoP has seen. */
  async remove(members: string[], options: { signal?: AbortSignal } = {}): Promise<WriteResult> {
    return this.update([], members, options);
  }

  /** Remove and add in one write (removes first); a member in both is refused. */
  async update(add: string[], remove: string[], options: { signal?: AbortSignal } = {}): Promise<WriteResult> {
    return this.#transport.json(post(this.#path, JSON.stringify({ add, remove }), options.signal));
  }

  /** One page of members, sorted; pass `cursor` of one page to get the next. */
  async members(options: SetMembersOptions = {}): Promise<SetPage> {
    const page = query([["prefix", options.prefix], ["limit", options.limit], ["cursor", options.cursor]]);
    return this.#transport.json({ method: "GET", path: this.#path + page, idempotent: true, signal: options.signal });
  }

  /** Remove every member this PoP holds (members added concurrently elsewhere survive). */
  async clear(options: { signal?: AbortSignal } = {}): Promise<WriteResult> {
    return this.#transport.json({ method: "DELETE", path: this.#path, idempotent: true, signal: options.signal });
  }
}
