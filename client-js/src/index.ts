/**
 * EdgeKV for edge runtimes: web-standard APIs only (fetch, Headers, ReadableStream,
 * TextEncoder, AbortSignal), so one build runs on Workers, Deno, Bun, Node >= 18 and browsers.
 *
 * ```ts
 * const flags = new EdgeKV({ url, token }).namespace("flags");
 * await flags.put("beta", "on", { metadata: { owner: "web" } });
 * await flags.get("beta"); // "on"
 * ```
 */
export { EdgeKV, SESSION_COOKIE, type CookieOptions } from "./client.js";
export { Namespace } from "./kv.js";
export type {
  BulkOperation,
  Condition,
  DeleteOptions,
  GetOptions,
  GetWithMetadataResult,
  ListKey,
  ListOptions,
  ListResult,
  PutOptions,
  PutValue,
  ValueType,
  WriteResult,
  Written,
} from "./kv.js";
export { Collection, filters } from "./docs.js";
export type { Document, DocumentPage, Filter, Index, Json, JsonObject, Operator, QueryOptions, Where } from "./docs.js";
export { Counter, EdgeSet } from "./crdts.js";
export type { CounterAddOptions, CounterWrite, SetMembersOptions, SetPage } from "./crdts.js";
export { SseParser, type WatchEvent, type WatchOptions } from "./watch.js";
export { BOOKMARK_HEADER, BookmarkSet } from "./bookmarks.js";
export { RETRY_BASE_MS, retryDelay, shouldRetry, type Call, type ClientOptions } from "./transport.js";
export {
  ApiError,
  EdgeKVError,
  Forbidden,
  InvalidRequest,
  NotFound,
  PreconditionFailed,
  StorageFull,
  TooLarge,
  TransportError,
  Unauthorized,
  Unavailable,
} from "./errors.js";
export { errorFor } from "./mapping.js";
export * from "./codes.js";
