// A Workers-style fetch handler on EdgeKV: feature flags with an A/B bucket, and
// read-your-writes after a form post. The same module runs on Cloudflare Workers,
// under Node (node-server.mjs) and under Deno (deno-server.ts).
//
// env: EDGEKV_URL (the PoP to write at), EDGEKV_READ_URL (the PoP to read at; default
// the same), EDGEKV_TOKEN (none for `edgekv demo`, which runs in protected mode).
import { EdgeKV } from "../dist/index.js";

/** A stable bucket 0-99 for a user and an experiment (FNV-1a). */
function bucket(user, experiment) {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(`${experiment}:${user}`)) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  return hash % 100;
}

const html = (body, init = {}) =>
  new Response(`<!doctype html><meta charset="utf-8"><body>${body}</body>`, {
    ...init,
    headers: { "content-type": "text/html; charset=utf-8", ...init.headers },
  });
const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export default {
  async fetch(request, env) {
    const kv = new EdgeKV({ url: env.EDGEKV_URL, token: env.EDGEKV_TOKEN });
    const url = new URL(request.url);
    const user = url.searchParams.get("user") ?? "anonymous";

    if (url.pathname === "/") {
      // Feature flags: {"enabled": true, "rollout": 30} puts 30% of users in variant B.
      const flag = (await kv.namespace("flags").get("new-checkout", "json")) ?? { enabled: false, rollout: 0 };
      const variant = flag.enabled && bucket(user, "new-checkout") < flag.rollout ? "B" : "A";
      return html(`<p>Hello ${escape(user)}: checkout variant <b id="variant">${variant}</b></p>`, {
        headers: { "x-variant": variant },
      });
    }

    // The session carries the user's bookmarks in a cookie between requests.
    const session = kv.sessionFrom(request);
    if (url.pathname === "/profile" && request.method === "POST") {
      const form = await request.formData();
      await session.namespace("profiles").put(user, String(form.get("name") ?? ""));
      return new Response(null, {
        status: 303,
        headers: { location: `/profile?user=${encodeURIComponent(user)}`, "set-cookie": session.sessionCookie({ secure: url.protocol === "https:" }) },
      });
    }
    if (url.pathname === "/profile") {
      // Read at another PoP: the session waits for the form's write to arrive there,
      // so the user never sees the name they had before posting.
      const name = await session.at(env.EDGEKV_READ_URL ?? env.EDGEKV_URL).namespace("profiles").get(user);
      return html(`<p>Name: <span id="name">${escape(name ?? "(none)")}</span></p>`);
    }
    return new Response("not found", { status: 404 });
  },
};
