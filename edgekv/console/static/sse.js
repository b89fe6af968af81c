// Following a watch (server-sent events) with the bearer header.
// EventSource cannot send an Authorization header, so the stream is read with
// fetch(): the body's bytes are split into SSE lines here, and a stream that
// ends (a cut, a node restarting, the network) is opened again with the last
// event id as Last-Event-ID, which the node resumes from without a gap.

import { session, ApiError } from "./api.js";

const RETRY_MS = 1000;

// Parses the text/event-stream format (the WHATWG rules the node's frames use:
// "field: value" lines, a blank line ends an event, ":" starts a comment).
export class SseParser {
  constructor(onEvent, onId) {
    this.onEvent = onEvent; // (type, data, id)
    this.onId = onId;       // (id): an id line, with an event or alone (a heartbeat's)
    this.buffer = "";
    this.reset();
  }

  reset() { this.type = ""; this.data = []; this.id = null; }

  push(text) {
    this.buffer += text;
    let cut;
    while ((cut = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, cut);
      const width = this.buffer.startsWith("\r\n", cut) ? 2 : 1;
      // A lone "\r" at the end may be half of a "\r\n" still to come.
      if (width === 1 && this.buffer[cut] === "\r" && cut + 1 === this.buffer.length) break;
      this.buffer = this.buffer.slice(cut + width);
      this.line(line);
    }
  }

  line(line) {
    if (line === "") {
      if (this.id !== null) this.onId(this.id);
      if (this.data.length) this.onEvent(this.type || "message", this.data.join("\n"), this.id);
      this.reset();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.id = value;
  }
}

// Follows `path` until `signal` aborts: onEvent(type, data) for each event,
// onStatus(text) when the stream opens, ends or fails. After a `relist` event the
// next stream starts afresh (no Last-Event-ID) and onRelist() is called first.
export async function follow(path, { signal, onEvent, onStatus = () => {}, onRelist = () => {} }) {
  let lastId = null;
  let relist = false;
  while (!signal.aborted) {
    const headers = new Headers({ Accept: "text/event-stream" });
    if (session.token) headers.set("Authorization", `Bearer ${session.token}`);
    if (lastId !== null) headers.set("Last-Event-ID", lastId);
    try {
      const response = await fetch(path, { headers, signal, credentials: "omit", cache: "no-store" });
      if (!response.ok) {
        let message = response.statusText;
        try { message = (await response.json()).error.message; } catch { /* not JSON */ }
        throw new ApiError(response.status, `http_${response.status}`, message);
      }
      onStatus("catching up");
      const parser = new SseParser((type, data) => {
        if (type === "relist") { relist = true; lastId = null; }
        onEvent(type, data);
      }, (id) => { if (!relist) lastId = id; });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(value);
      }
      onStatus("reconnecting");
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && (error.status === 401 || error.status === 403
        || error.status === 400)) {
        onStatus(error.message, true);
        return; // asking again would be refused again
      }
      onStatus(`reconnecting (${error.message})`);
    }
    if (relist) { relist = false; onRelist(); }
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}
