/**
 * The error families of the client, named as the Python client's exceptions:
 *
 * ```
 * EdgeKVError
 * ├── TransportError          the node could not be reached in time, or answered garbage
 * └── ApiError                the node answered with an error body (.code, .message, .status)
 *     ├── InvalidRequest      400
 *     ├── Unauthorized        401
 *     ├── Forbidden           403
 *     ├── NotFound            404
 *     ├── TooLarge            413
 *     ├── PreconditionFailed  409/412 (.currentVersion)
 *     └── Unavailable         503 and other 5xx
 *         └── StorageFull     507
 * ```
 *
 * Below each family sits one class per error code (`KeyTooLongError`,
 * `BookmarkNotReachedError`, ...), generated into `codes.ts` from the code
 * table the server raises from.
 */

/** Base of every error the client throws (a caller's own abort is rethrown as it is). */
export class EdgeKVError extends Error {
  override get name(): string {
    return "EdgeKVError";
  }
}

/** The node could not be reached within the timeout, or its answer could not be read. */
export class TransportError extends EdgeKVError {
  override get name(): string {
    return "TransportError";
  }
}

/** The node answered with an error: `code`, `message` and HTTP `status`. */
export class ApiError extends EdgeKVError {
  readonly code: string;
  readonly status: number;
  /** The error object's other fields (e.g. `version`, `failed` of a precondition). */
  readonly details: Record<string, unknown>;

  constructor(code: string, message: string, status: number, details: Record<string, unknown> = {}) {
    super(`${code}: ${message}`);
    this.code = code;
    this.status = status;
    this.details = details;
  }

  /** The class name of the code (`key_too_long` → `KeyTooLongError`); minifiers keep it right. */
  override get name(): string {
    return this.code.replace(/(^|_)([a-z])/g, (_, __, c: string) => c.toUpperCase()) + "Error";
  }
}

/** The request was malformed or over a limit on its shape (400). */
export class InvalidRequest extends ApiError {}
/** No token, or a token the node does not know (401). */
export class Unauthorized extends ApiError {}
/** The token lacks the needed scope (403). */
export class Forbidden extends ApiError {}
/** No such key, document or route (404). */
export class NotFound extends ApiError {}
/** A value, metadata, document or request over its size limit (413). */
export class TooLarge extends ApiError {}
/** A condition of a strong write did not hold (409); nothing was written. */
export class PreconditionFailed extends ApiError {
  /** The key's version when the condition failed (null: absent). */
  get currentVersion(): string | null {
    const version = this.details["version"];
    return typeof version === "string" ? version : null;
  }
}
/** The node cannot serve the request now (503, other 5xx); retry later or elsewhere. */
export class Unavailable extends ApiError {}
/** The node's disk is full (507): the write was not applied; reads still work there. */
export class StorageFull extends Unavailable {}
