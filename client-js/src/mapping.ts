/** From an error answer to the error class of its code (the code table decides, as in Python). */
import { ERROR_CLASSES, type ErrorCode } from "./codes.js";
import {
  ApiError,
  Forbidden,
  InvalidRequest,
  NotFound,
  PreconditionFailed,
  StorageFull,
  TooLarge,
  Unauthorized,
  Unavailable,
} from "./errors.js";

const BY_STATUS: Record<number, typeof ApiError> = {
  400: InvalidRequest,
  401: Unauthorized,
  403: Forbidden,
  404: NotFound,
  409: PreconditionFailed,
  412: PreconditionFailed,
  413: TooLarge,
  503: Unavailable,
  507: StorageFull,
};

/** The error for an error body; a code this client does not know is classed by its status. */
export function errorFor(
  code: string,
  message: string,
  status: number,
  details: Record<string, unknown> = {},
): ApiError {
  const known = Object.hasOwn(ERROR_CLASSES, code) ? ERROR_CLASSES[code as ErrorCode] : undefined;
  const cls = known ?? BY_STATUS[status] ?? (status >= 500 ? Unavailable : ApiError);
  return new cls(code, message, status, details);
}

/** The error of a failed answer (status >= 400), from its body `{"error": {"code", "message", ...}}`. */
export async function errorOf(response: Response): Promise<ApiError> {
  const text = await response.text();
  const status = response.status;
  try {
    const { code, message, ...details } = JSON.parse(text).error;
    if (typeof code === "string") return errorFor(code, String(message), status, details);
  } catch {
    // not the documented shape: classed below by its status, as the Python client does
  }
  return errorFor(status >= 500 ? "unavailable" : "invalid_request", text.slice(0, 200), status);
}
