/**
 * Document collections: `kv.docs("users")`. JSON documents that merge field by field
 * across PoPs (see docs/documents.md); reads in a session wait for its writes.
 */
import { InvalidDocumentIdError } from "./codes.js";
import { NotFound } from "./errors.js";
import { query, segment } from "./encoding.js";
import type { WriteResult } from "./kv.js";
import type { Transport } from "./transport.js";
import { watch, type WatchEvent, type WatchOptions } from "./watch.js";

export type Json = null | boolean | number | string | Json[] | { [field: string]: Json };
export type JsonObject = { [field: string]: Json };

/** A document as read: its id, JSON object and version (the `ETag`). */
export interface Document<T = JsonObject> {
  id: string;
  doc: T;
  version: string;
}

export interface DocumentPage<T = JsonObject> {
  documents: Document<T>[];
  list_complete: boolean;
  cursor: string | null;
}

export type Operator = "==" | "!=" | "<" | "<=" | ">" | ">=";
/** A filter: the API's own text (`"age>=30"`), or `[field, op, value]` (the value sent as a JSON literal). */
export type Filter = string | readonly [string, Operator, Json];
/** Filters that all hold: one, a list of them, or `{ field: value }` for equalities. */
export type Where = Filter | readonly Filter[] | { readonly [field: string]: Json };

export interface QueryOptions {
  where?: Where;
  /** A field, or `-field` for descending. */
  orderBy?: string;
  /** `queryPage`: the page size (1 to 1000, the node's default 100). `query`: the most documents in all. */
  limit?: number;
  cursor?: string | null;
  /** `query`: the size of each page request. */
  pageSize?: number;
  signal?: AbortSignal;
}

export interface Index {
  field: string;
  name: string;
  created_ms: number;
}

const OPERATORS = new Set(["==", "!=", "<", "<=", ">", ">="]);
const MAX_PAGE = 1000;

/** Every filter of `where` as a `where` parameter. */
export function filters(where: Where | undefined): string[] {
  if (where == null) return [];
  if (typeof where === "string") return [where];
  const one = (item: Filter): string => {
    if (typeof item === "string") return item;
    const [field, op, value] = item;
    if (!OPERATORS.has(op)) throw new TypeError(`unknown operator ${op}: use one of == != < <= > >=`);
    return `${field}${op}${JSON.stringify(value)}`;
  };
  if (Array.isArray(where)) {
    const list = where as readonly unknown[];
    // One [field, op, value]: its middle is an operator, which no filter list has.
    const isTriple = list.length === 3 && typeof list[0] === "string" && OPERATORS.has(list[1] as string) && !/[=<>]/.test(list[0]);
    return isTriple ? [one(where as unknown as Filter)] : (where as readonly Filter[]).map(one);
  }
  return Object.entries(where).map(([field, value]) => one([field, "==", value as Json]));
}

export class Collection<T = JsonObject> {
  readonly name: string;
  readonly #transport: Transport;
  readonly #base: string;

  constructor(transport: Transport, name: string) {
    this.#transport = transport;
    this.name = name;
    this.#base = `/v1/docs/${segment(name)}`;
  }

  /** The document with its version, or null when absent or deleted. */
  async get(id: string, options: { signal?: AbortSignal } = {}): Promise<Document<T> | null> {
    try {
      return await this.#transport.json<Document<T>>({ method: "GET", path: this.#path(id), idempotent: true, signal: options.signal });
    } catch (error) {
      if (error instanceof NotFound) return null;
      throw error;
    }
  }

  /** Replace the document (creating it). Retried like a put: a replace applied twice gives the same document. */
  async put(id: string, doc: T, options: { signal?: AbortSignal } = {}): Promise<WriteResult> {
    return this.#write("PUT", id, doc, "application/json", options.signal);
  }

  /** Apply an RFC 7386 merge patch (null removes a field); `NotFound` when the document does not exist. */
  async patch(id: string, patch: Partial<T> | JsonObject, options: { signal?: AbortSignal } = {}): Promise<WriteResult> {
    return this.#write("PATCH", id, patch, "application/merge-patch+json", options.signal);
  }

  /** Delete the document (succeeds when absent). */
  async delete(id: string, options: { signal?: AbortSignal } = {}): Promise<WriteResult> {
    return this.#transport.json({ method: "DELETE", path: this.#path(id), idempotent: true, signal: options.signal });
  }

  /** One page of the documents matching every filter of `where`. */
  async queryPage(options: QueryOptions = {}): Promise<DocumentPage<T>> {
    const pairs: [string, unknown][] = filters(options.where).map((text) => ["where", text]);
    pairs.push(["order_by", options.orderBy], ["limit", options.limit], ["cursor", options.cursor]);
    return this.#transport.json({ method: "GET", path: this.#base + query(pairs), idempotent: true, signal: options.signal });
  }

  /** Every matching document, page by page (at most `limit` of them, if given). */
  async *query(options: QueryOptions = {}): AsyncGenerator<Document<T>> {
    const { limit, pageSize } = options;
    let cursor = options.cursor ?? null;
    for (let returned = 0; limit == null || returned < limit; ) {
      const left = limit == null ? undefined : Math.min(limit - returned, MAX_PAGE);
      const size = left == null ? pageSize : Math.min(pageSize ?? left, left);
      const page = await this.queryPage({ ...options, limit: size, cursor });
      yield* page.documents;
      returned += page.documents.length;
      if (page.list_complete || page.cursor == null) return;
      cursor = page.cursor;
    }
  }

  /** Declare an index on `field` (a dotted path) at this PoP, for queries to use (admin scope). */
  async createIndex(field: string, options: { signal?: AbortSignal } = {}): Promise<Index> {
    const call = { method: "POST", path: `${this.#base}/_indexes`, headers: { "content-type": "application/json" }, body: JSON.stringify({ field }), idempotent: true, signal: options.signal };
    return this.#transport.json(call);
  }

  /** The indexes declared on the collection. */
  async indexes(options: { signal?: AbortSignal } = {}): Promise<Index[]> {
    const answer = await this.#transport.json<{ indexes: Index[] }>({ method: "GET", path: `${this.#base}/_indexes`, idempotent: true, signal: options.signal });
    return answer.indexes;
  }

  /** The collection's changes, for ever: as `Namespace.watch`, each value the document as it is now. */
  watch(options: WatchOptions = {}): AsyncGenerator<WatchEvent<T>, void, undefined> {
    return watch(this.#transport, "docs", this.name, options);
  }

  #path(id: string): string {
    if (id === "" || id === "." || id === "..") {
      // URL handling would rewrite these into the collection's own path.
      throw new InvalidDocumentIdError("invalid_document_id", `not a document id: ${JSON.stringify(id)}`, 400);
    }
    return `${this.#base}/${segment(id)}`;
  }

  #write(method: string, id: string, body: unknown, type: string, signal?: AbortSignal): Promise<WriteResult> {
    const call = { method, path: this.#path(id), headers: { "content-type": type }, body: JSON.stringify(body), idempotent: true, signal };
    return this.#transport.json(call);
  }
}
