/** Small web-standard helpers: path escaping, base64, ASCII JSON for headers. */
import { InvalidKeyError } from "./codes.js";

/** A path segment, percent-encoded (`/` too, unless `keepSlash`). */
export function segment(text: string, keepSlash = false): string {
  const encoded = encodeURIComponent(text);
  return keepSlash ? encoded.replace(/%2F/g, "/") : encoded;
}

/**
 * The path of a key ('/' kept readable, as the Python client sends it). Keys a URL
 * cannot carry (an empty key would name the listing) are refused before sending.
 */
export function keyPath(namespace: string, key: string): string {
  if (key === "" || key === "." || key === "..") {
    throw new InvalidKeyError("invalid_key", `a key is a non-empty string other than . and ..: ${JSON.stringify(key)}`, 400);
  }
  return `/v1/kv/${segment(namespace)}/${segment(key, true)}`;
}

/** A query string from pairs whose value is given (`?a=1&b=2`, or ''). */
export function query(pairs: [string, unknown][]): string {
  const given = pairs.filter(([, value]) => value != null && value !== "");
  return given.length ? "?" + given.map(([k, v]) => `${k}=${encodeURIComponent(String(v))}`).join("&") : "";
}

/** JSON with every non-ASCII character escaped: header values are ASCII. */
export const asciiJson = (value: unknown): string =>
  JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));

const encoder = new TextEncoder();

/** The bytes of a value given as text, ArrayBuffer or a typed array / DataView. */
export function bytesOf(value: string | ArrayBuffer | ArrayBufferView): Uint8Array<ArrayBuffer> {
  if (typeof value === "string") return encoder.encode(value);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  // A view of a SharedArrayBuffer is sent as fetch takes it; typed as the common case.
  return new Uint8Array(value.buffer as ArrayBuffer, value.byteOffset, value.byteLength);
}

/** Base64 of bytes (in slices: one call per byte would overflow the stack). */
export function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** The bytes of base64 text. */
export function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
