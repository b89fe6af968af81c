// Type test (`tsc --noEmit -p test/types`): code written for Workers KV's `KVNamespace`
// takes an EdgeKV namespace binding for the methods they share. Never run, only checked.
// Compiled as a Workers project is: the runtime's globals from @cloudflare/workers-types
// (its ReadableStream, Response, ...) and no DOM library, with the client's own .d.ts.
import { EdgeKV, type Namespace } from "../../dist/index.js";

type Shared = Pick<KVNamespace, "get" | "getWithMetadata" | "put" | "delete" | "list">;

// A function as a Workers KV user writes it.
async function readFlag(flags: Shared, user: string): Promise<string> {
  const value = await flags.get(`flag:${user}`);
  const json = await flags.get<{ on: boolean }>("config", "json");
  const bytes = await flags.get("blob", { type: "arrayBuffer" });
  const stream = await flags.get("blob", "stream");
  const many = await flags.get(["a", "b"], "text");
  const { value: v, metadata } = await flags.getWithMetadata<{ owner: string }>("beta");
  await flags.put("beta", "on", { expirationTtl: 60, metadata: { owner: "web" } });
  await flags.put("bin", new Uint8Array([1, 2]));
  await flags.delete("old");
  const page = await flags.list({ prefix: "flag:", limit: 10 });
  const next = page.list_complete ? null : page.cursor;
  return `${value}${json?.on}${bytes?.byteLength}${stream === null}${many.size}${v}${metadata?.owner}${next}`;
}

const binding: Namespace = new EdgeKV({ url: "http://127.0.0.1:8787" }).namespace("flags");
void readFlag(binding, "u1");
const asWorkersKV: Shared = binding;
void asWorkersKV;

// EdgeKV's additions keep their own types.
async function extras(flags: Namespace): Promise<void> {
  const written = await flags.put("k", "v", { ifNoneMatch: true });
  const version: string | undefined = written.version;
  const entry = await flags.getWithMetadata("k");
  const current: string | null = entry.version;
  void version;
  void current;
  // @ts-expect-error: a value must be text, bytes or a stream
  await flags.put("k", 42);
}
void extras;

// Watch: an async iterator of typed events, in a Worker as elsewhere.
async function follow(client: EdgeKV, signal: AbortSignal): Promise<void> {
  for await (const event of client.namespace("flags").watch({ prefix: "beta", snapshot: true, signal })) {
    const bytes: Uint8Array | undefined = event.value;
    const token: string | undefined = event.token;
    void [bytes, token, event.type === "relist"];
  }
  for await (const event of client.docs<{ name: string }>("users").watch({ failover: ["https://b.example"] })) {
    const name: string | undefined = event.value?.name;
    void name;
  }
  // @ts-expect-error: keys is a list
  void client.namespace("flags").watch({ keys: "beta" });
}
void follow;
