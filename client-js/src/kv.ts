/**
 * A namespace binding shaped like Workers KV's `KVNamespace`: `get`, `getWithMetadata`,
 * `put`, `delete`, `list` take the same arguments and answer the same shapes, so a
 * function typed for Workers KV takes it. EdgeKV's additions: get-many (`get` of an
 * array, as Workers KV has it), atomic `bulk` writes, and in strong namespaces
 * conditional writes (`ifMatch`, `ifNoneMatch`), strong reads and `transaction`.
 */
import { NotFound } from "./errors.js";
import { asciiJson, bytesOf, fromBase64, keyPath, query, segment, toBase64 } from "./encoding.js";
import type { Call, Transport } from "./transport.js";
import { watch, type WatchEvent, type WatchOptions } from "./watch.js";

export type ValueType = "text" | "json" | "arrayBuffer" | "stream";
export type PutValue = string | ArrayBuffer | ArrayBufferView | ReadableStream;

export interface GetOptions<Type> {
  type: Type;
  /** Accepted for Workers KV compatibility; EdgeKV reads its PoP's copy, there is no cache. */
  cacheTtl?: number;
  /** `"strong"` (strong namespaces): the latest committed value, from the upstream. */
  consistency?: "strong";
  signal?: AbortSignal;
}

export interface PutOptions {
  /** Expire at this time (epoch seconds). */
  expiration?: number;
  /** Expire this many seconds from now (EdgeKV has no 60 s minimum). */
  expirationTtl?: number;
  /** A JSON object, at most 1 KiB as compact JSON. */
  metadata?: any | null;
  /** Strong namespaces: write only if the entry has this version, or is live (`"*"`). */
  ifMatch?: string;
  /** Strong namespaces: write only if the key is absent (create only). */
  ifNoneMatch?: boolean;
  signal?: AbortSignal;
}

export interface DeleteOptions {
  /** Strong namespaces: delete only if the entry has this version, or is live (`"*"`). */
  ifMatch?: string;
  signal?: AbortSignal;
}

/** What a write answers: its bookmark (sessions) and version (its `ETag`). */
export interface WriteResult {
  bookmark: string;
  version?: string;
}

/**
 * The promise `put` and `delete` return: it resolves to the `WriteResult`, and is typed
 * as a `Promise<void>` too, so the binding satisfies Workers KV's `KVNamespace`.
 */
export type Written = Promise<WriteResult> & Promise<void>;

export interface GetWithMetadataResult<Value, Metadata> {
  value: Value | null;
  metadata: Metadata | null;
  /** Always null: Workers KV's cache status; EdgeKV has no read cache. */
  cacheStatus: string | null;
  /** The entry's version (its `ETag`), for conditional writes; null when absent. */
  version: string | null;
  /** Epoch seconds when the entry expires; null when it does not (or is absent). */
  expiration: number | null;
}

export interface ListOptions {
  prefix?: string | null;
  /** 1 to 1000 (default 1000). */
  limit?: number;
  cursor?: string | null;
  signal?: AbortSignal;
}

export interface ListKey<Metadata> {
  name: string;
  expiration?: number;
  metadata?: Metadata;
}

export type ListResult<Metadata> =
  | { list_complete: false; keys: ListKey<Metadata>[]; cursor: string; cacheStatus: string | null }
  | { list_complete: true; keys: ListKey<Metadata>[]; cacheStatus: string | null };

export type BulkOperation =
  | {
      op: "put";
      key: string;
      value: string | ArrayBuffer | ArrayBufferView;
      metadata?: any | null;
      expiration?: number;
      expirationTtl?: number;
    }
  | { op: "delete"; key: string };

/** A transaction's condition: the key's live version, or whether it exists. */
export type Condition = { key: string; version: string } | { key: string; exists: boolean };

type Arg = ValueType | Partial<GetOptions<ValueType | undefined>> | undefined;
type Raw = { bytes: Uint8Array<ArrayBuffer>; metadata: unknown; expiration: number | null; version: string | null };

const decoder = new TextDecoder();
const optionsOf = (arg: Arg): Partial<GetOptions<ValueType | undefined>> =>
  typeof arg === "string" ? { type: arg } : (arg ?? {});

/** A value read as `type` (from a response, or from bytes a get-many answer inlined). */
async function decode(source: Response | Uint8Array<ArrayBuffer>, type: ValueType | undefined): Promise<unknown> {
  if (source instanceof Uint8Array) {
    if (type === "arrayBuffer") return source.slice().buffer;
    if (type === "stream") return new Response(source).body ?? new Blob().stream();
    const text = decoder.decode(source);
    return type === "json" ? JSON.parse(text) : text;
  }
  if (type === "arrayBuffer") return source.arrayBuffer();
  if (type === "stream") return source.body ?? new Blob().stream();
  return type === "json" ? source.json() : source.text();
}

/** What the transport reads: JSON is read as text and parsed by the caller, outside retries. */
const textFor = (type: ValueType | undefined): ValueType | undefined => (type === "json" ? "text" : type);

export class Namespace {
  readonly name: string;
  readonly #transport: Transport;
  readonly #base: string;

  constructor(transport: Transport, name: string) {
    this.#transport = transport;
    this.name = name;
    this.#base = `/v1/kv/${segment(name)}`;
  }

  get(key: string, options?: Partial<GetOptions<undefined>>): Promise<string | null>;
  get(key: string, type: "text"): Promise<string | null>;
  get<ExpectedValue = unknown>(key: string, type: "json"): Promise<ExpectedValue | null>;
  get(key: string, type: "arrayBuffer"): Promise<ArrayBuffer | null>;
  get(key: string, type: "stream"): Promise<ReadableStream | null>;
  get(key: string, options?: GetOptions<"text">): Promise<string | null>;
  get<ExpectedValue = unknown>(key: string, options?: GetOptions<"json">): Promise<ExpectedValue | null>;
  get(key: string, options?: GetOptions<"arrayBuffer">): Promise<ArrayBuffer | null>;
  get(key: string, options?: GetOptions<"stream">): Promise<ReadableStream | null>;
  get(key: string[], type: "text"): Promise<Map<string, string | null>>;
  get<ExpectedValue = unknown>(key: string[], type: "json"): Promise<Map<string, ExpectedValue | null>>;
  get(key: string[], options?: Partial<GetOptions<undefined>>): Promise<Map<string, string | null>>;
  get(key: string[], options?: GetOptions<"text">): Promise<Map<string, string | null>>;
  get<ExpectedValue = unknown>(key: string[], options?: GetOptions<"json">): Promise<Map<string, ExpectedValue | null>>;
  get(key: string[], type: "arrayBuffer"): Promise<Map<string, ArrayBuffer | null>>;
  /** The value at `key` read as `type` (default text), or null when absent; an array of keys reads them all at once. */
  async get(key: string | string[], arg?: Arg): Promise<unknown> {
    const options = optionsOf(arg);
    if (Array.isArray(key)) {
      const found = await this.#getMany(key, options.signal);
      const values = new Map<string, unknown>();
      for (const [name, raw] of found) values.set(name, raw && (await decode(raw.bytes, options.type)));
      return values;
    }
    try {
      const value = await this.#transport.run(this.#getCall(key, options), (response) => decode(response, textFor(options.type)));
      return options.type === "json" ? JSON.parse(value as string) : value;
    } catch (error) {
      if (error instanceof NotFound) return null;
      throw error;
    }
  }

  getWithMetadata<Metadata = unknown>(key: string, options?: Partial<GetOptions<undefined>>): Promise<GetWithMetadataResult<string, Metadata>>;
  getWithMetadata<Metadata = unknown>(key: string, type: "text"): Promise<GetWithMetadataResult<string, Metadata>>;
  getWithMetadata<ExpectedValue = unknown, Metadata = unknown>(key: string, type: "json"): Promise<GetWithMetadataResult<ExpectedValue, Metadata>>;
  getWithMetadata<Metadata = unknown>(key: string, type: "arrayBuffer"): Promise<GetWithMetadataResult<ArrayBuffer, Metadata>>;
  getWithMetadata<Metadata = unknown>(key: string, type: "stream"): Promise<GetWithMetadataResult<ReadableStream, Metadata>>;
  getWithMetadata<Metadata = unknown>(key: string, options: GetOptions<"text">): Promise<GetWithMetadataResult<string, Metadata>>;
  getWithMetadata<ExpectedValue = unknown, Metadata = unknown>(key: string, options: GetOptions<"json">): Promise<GetWithMetadataResult<ExpectedValue, Metadata>>;
  getWithMetadata<Metadata = unknown>(key: string, options: GetOptions<"arrayBuffer">): Promise<GetWithMetadataResult<ArrayBuffer, Metadata>>;
  getWithMetadata<Metadata = unknown>(key: string, options: GetOptions<"stream">): Promise<GetWithMetadataResult<ReadableStream, Metadata>>;
  getWithMetadata<Metadata = unknown>(key: string[], type: "text"): Promise<Map<string, GetWithMetadataResult<string, Metadata>>>;
  getWithMetadata<ExpectedValue = unknown, Metadata = unknown>(key: string[], type: "json"): Promise<Map<string, GetWithMetadataResult<ExpectedValue, Metadata>>>;
  getWithMetadata<Metadata = unknown>(key: string[], options?: Partial<GetOptions<undefined>>): Promise<Map<string, GetWithMetadataResult<string, Metadata>>>;
  getWithMetadata<Metadata = unknown>(key: string[], options?: GetOptions<"text">): Promise<Map<string, GetWithMetadataResult<string, Metadata>>>;
  getWithMetadata<ExpectedValue = unknown, Metadata = unknown>(key: string[], options?: GetOptions<"json">): Promise<Map<string, GetWithMetadataResult<ExpectedValue, Metadata>>>;
  getWithMetadata<Metadata = unknown>(key: string[], type: "arrayBuffer"): Promise<Map<string, GetWithMetadataResult<ArrayBuffer, Metadata>>>;
  /** The value with its metadata, version and expiration (all null when absent). */
  async getWithMetadata(key: string | string[], arg?: Arg): Promise<unknown> {
    const options = optionsOf(arg);
    const result = async (raw: Raw | null) => ({
      value: raw && (await decode(raw.bytes, options.type)),
      metadata: raw?.metadata ?? null,
      cacheStatus: null,
      version: raw?.version ?? null,
      expiration: raw?.expiration ?? null,
    });
    if (Array.isArray(key)) {
      const values = new Map<string, unknown>();
      for (const [name, raw] of await this.#getMany(key, options.signal)) values.set(name, await result(raw));
      return values;
    }
    try {
      const entry = await this.#transport.run(this.#getCall(key, options), async (response) => {
        const headers = response.headers;
        const metadata = headers.get("edgekv-metadata");
        const expiration = headers.get("edgekv-expiration");
        return {
          value: await decode(response, textFor(options.type)),
          metadata: metadata ? JSON.parse(metadata) : null,
          cacheStatus: null,
          version: headers.get("etag")?.replace(/"/g, "") ?? null,
          expiration: expiration ? Number(expiration) : null,
        };
      });
      if (options.type === "json") entry.value = JSON.parse(entry.value as string);
      return entry;
    } catch (error) {
      if (error instanceof NotFound) return result(null);
      throw error;
    }
  }

  /** Write `value` (text as UTF-8, bytes, or a stream); answers its bookmark and version. */
  put(key: string, value: PutValue, options: PutOptions = {}): Written {
    return this.#put(key, value, options) as Written;
  }

  /** Delete `key` (succeeds when absent: the delete wins over older writes replicating in). */
  delete(key: string, options: DeleteOptions = {}): Written {
    return this.#delete(key, options) as Written;
  }

  async #put(key: string, value: PutValue, options: PutOptions): Promise<WriteResult> {
    const headers: Record<string, string> = { "content-type": "application/octet-stream", ...conditions(options) };
    if (options.metadata != null) headers["EdgeKV-Metadata"] = asciiJson(options.metadata);
    const body = value instanceof ReadableStream || typeof value === "string" ? value : bytesOf(value);
    const path = keyPath(this.name, key) + query([["ttl", options.expirationTtl], ["expiration", options.expiration]]);
    return this.#transport.json({ method: "PUT", path, headers, body, idempotent: !isConditional(headers), signal: options.signal });
  }

  async #delete(key: string, options: DeleteOptions): Promise<WriteResult> {
    const headers = conditions(options);
    return this.#transport.json({ method: "DELETE", path: keyPath(this.name, key), headers, idempotent: !isConditional(headers), signal: options.signal });
  }

  /** One page of live keys in byte order; pass `cursor` of one page to get the next. */
  async list<Metadata = unknown>(options: ListOptions = {}): Promise<ListResult<Metadata>> {
    const path = this.#base + query([["prefix", options.prefix], ["limit", options.limit], ["cursor", options.cursor]]);
    const page = await this.#transport.json<{ keys: { name: string; expiration: number | null; metadata: Metadata | null }[]; list_complete: boolean; cursor: string | null }>({ method: "GET", path, idempotent: true, signal: options.signal });
    // Workers KV leaves out what a key does not have; EdgeKV answers null.
    const keys = page.keys.map(({ name, expiration, metadata }) => {
      const item: ListKey<Metadata> = { name };
      if (expiration != null) item.expiration = expiration;
      if (metadata != null) item.metadata = metadata;
      return item;
    });
    return page.list_complete || page.cursor == null
      ? { list_complete: true, keys, cacheStatus: null }
      : { list_complete: false, keys, cursor: page.cursor, cacheStatus: null };
  }

  /** Apply up to 10 000 puts and deletes atomically (all or none); never retried. */
  async bulk(operations: BulkOperation[], options: { signal?: AbortSignal } = {}): Promise<WriteResult> {
    return this.#transport.json(this.#post("_bulk", { operations: operations.map(wireOperation) }, false, options.signal));
  }

  /**
   * Strong namespaces: check every condition, then apply every operation, in one
   * linearizable transaction; `PreconditionFailed` (its `details.failed` lists the keys) when one fails.
   */
  async transaction(operations: BulkOperation[], conditions: Condition[] = [], options: { signal?: AbortSignal } = {}): Promise<WriteResult> {
    return this.#transport.json(this.#post("_txn", { conditions, operations: operations.map(wireOperation) }, false, options.signal));
  }

  /**
   * The namespace's changes, for ever (`for await (const event of ns.watch({ prefix }))`):
   * resumed after a dropped stream, at the `failover` PoPs in turn, never repeating
   * a state or going back; `signal` (or leaving the loop) ends it. See `WatchOptions`.
   */
  watch(options: WatchOptions = {}): AsyncGenerator<WatchEvent<Uint8Array<ArrayBuffer>>, void, undefined> {
    return watch(this.#transport, "kv", this.name, options);
  }

  #getCall(key: string, options: Partial<GetOptions<unknown>>): Call {
    return { method: "GET", path: keyPath(this.name, key) + query([["consistency", options.consistency]]), idempotent: true, signal: options.signal };
  }

  #post(route: string, body: unknown, idempotent: boolean, signal?: AbortSignal): Call {
    const headers = { "content-type": "application/json" };
    return { method: "POST", path: `${this.#base}/${route}`, headers, body: JSON.stringify(body), idempotent, signal };
  }

  /** Up to 100 entries at once; values past the node's answer budget are fetched one by one. */
  async #getMany(keys: string[], signal?: AbortSignal): Promise<Map<string, Raw | null>> {
    type Item = { value: string | null; metadata: unknown; expiration: number | null; version: string } | null;
    const answer = await this.#transport.json<{ entries: Record<string, Item> }>(this.#post("_get", { keys }, true, signal));
    const found = new Map<string, Raw | null>();
    for (const name of keys) {
      const item = answer.entries[name] ?? null;
      if (item && item.value === null) {
        const entry = await this.getWithMetadata(name, { type: "arrayBuffer", signal });
        found.set(name, entry.value && { ...entry, bytes: new Uint8Array(entry.value) });
      } else {
        found.set(name, item && { bytes: fromBase64(item.value!), metadata: item.metadata, expiration: item.expiration, version: item.version });
      }
    }
    return found;
  }
}

function conditions(options: { ifMatch?: string; ifNoneMatch?: boolean }): Record<string, string> {
  if (options.ifMatch != null && options.ifNoneMatch) throw new TypeError("give ifMatch or ifNoneMatch, not both");
  if (options.ifNoneMatch) return { "If-None-Match": "*" };
  if (options.ifMatch != null) return { "If-Match": options.ifMatch === "*" ? "*" : `"${options.ifMatch}"` };
  return {};
}

// A conditional write that may have been applied is never sent again: the retry
// would fail its own condition and report the success as a conflict.
const isConditional = (headers: Record<string, string>) => "If-Match" in headers || "If-None-Match" in headers;

function wireOperation(operation: BulkOperation): Record<string, unknown> {
  if (operation.op !== "put") return operation;
  const { value, expirationTtl, ...rest } = operation;
  const wire: Record<string, unknown> = { ...rest, value: toBase64(bytesOf(value)) };
  if (expirationTtl != null) wire["ttl"] = expirationTtl;
  return wire;
}
