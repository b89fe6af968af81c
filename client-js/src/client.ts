/**
 * The entry point: `new EdgeKV({ url, token })`, its namespaces, collections and sessions.
 *
 * Each feature is a module with a handle class built on the shared `Transport`
 * (`kv.ts`: `namespace()`, `docs.ts`: `docs()`, `crdts.ts`: `counter()`, `set()`,
 * `watch.ts`: `namespace().watch()`, `docs().watch()`).
 */
import { BOOKMARK_HEADER, BookmarkSet } from "./bookmarks.js";
import { Counter, EdgeSet } from "./crdts.js";
import { Collection, type JsonObject } from "./docs.js";
import { Namespace } from "./kv.js";
import { Transport, type ClientOptions } from "./transport.js";

/** The cookie `sessionFrom` reads and `sessionCookie` writes, by default. */
export const SESSION_COOKIE = "edgekv_session";

export interface CookieOptions {
  /** Cookie name (default `edgekv_session`). */
  name?: string;
  /** Seconds the cookie lives (default 3600: a bookmark older than replication lag is moot). */
  maxAge?: number;
  /** Cookie path (default `/`). */
  path?: string;
  /** Send only over HTTPS (default true). */
  secure?: boolean;
}

export class EdgeKV {
  readonly #transport: Transport;

  constructor(options: ClientOptions, bookmarks: BookmarkSet | null = null) {
    this.#transport = new Transport(options, bookmarks);
  }

  /** The node's URL. */
  get url(): string {
    return this.#transport.url;
  }

  /** A binding for namespace `name`, shaped like Workers KV's `KVNamespace`. */
  namespace(name: string): Namespace {
    return new Namespace(this.#transport, name);
  }

  /** The documents of `collection`. */
  docs<T = JsonObject>(collection: string): Collection<T> {
    return new Collection<T>(this.#transport, collection);
  }

  /** Counter `key` of namespace `ns`: `add(n)`, `value()`, `reset()`. */
  counter(ns: string, key: string): Counter {
    return new Counter(this.#transport, ns, key);
  }

  /** Add-wins set `key` of namespace `ns`: `add([...])`, `remove([...])`, `members()`, `clear()`. */
  set(ns: string, key: string): EdgeSet {
    return new EdgeSet(this.#transport, ns, key);
  }

  /**
   * A session: it remembers the bookmark of every write and sends them with every
   * request, so its reads see its own writes and never go back in time, at any PoP
   * (a PoP that has not replicated them yet waits, then throws `BookmarkNotReachedError`).
   * `bookmark`: where an earlier request of the same user left off (`session.bookmark`).
   */
  session(bookmark = ""): EdgeKV {
    return new EdgeKV(this.#transport.options, new BookmarkSet(bookmark));
  }

  /**
   * The session an incoming request carries: its `EdgeKV-Bookmark` header, or else
   * its session cookie (a fresh session when it has neither).
   */
  sessionFrom(request: Request, cookie: string = SESSION_COOKIE): EdgeKV {
    const header = request.headers.get(BOOKMARK_HEADER);
    if (header) return this.session(header);
    for (const part of (request.headers.get("cookie") ?? "").split(";")) {
      const [name, ...value] = part.trim().split("=");
      if (name === cookie) {
        try {
          return this.session(decodeURIComponent(value.join("=")));
        } catch {
          break; // a cookie that does not decode carries no bookmark
        }
      }
    }
    return this.session();
  }

  /** This session at another PoP (or this client, if not a session). */
  at(url: string): EdgeKV {
    return new EdgeKV({ ...this.#transport.options, url }, this.#transport.bookmarks);
  }

  /** The session's bookmarks, for the `EdgeKV-Bookmark` header of a response ('' when none or not a session). */
  get bookmark(): string {
    return this.#transport.bookmarks?.toString() ?? "";
  }

  /** A `Set-Cookie` value carrying the session's bookmarks to the user's next request. */
  sessionCookie(options: CookieOptions = {}): string {
    const { name = SESSION_COOKIE, maxAge = 3600, path = "/", secure = true } = options;
    const value = encodeURIComponent(this.bookmark);
    return `${name}=${value}; Path=${path}; Max-Age=${maxAge}; HttpOnly; SameSite=Lax${secure ? "; Secure" : ""}`;
  }
}
