// Serves the Workers-style handler (worker.mjs) with Deno.serve.
//
//   edgekv demo
//   deno run --allow-net --allow-env examples/deno-server.ts
//   curl 'http://127.0.0.1:8080/?user=ann'
import worker from "./worker.mjs";

declare const Deno: {
  env: { get(name: string): string | undefined };
  serve(options: { port: number; hostname: string }, handler: (request: Request) => Promise<Response>): unknown;
};

const env = {
  EDGEKV_URL: Deno.env.get("EDGEKV_URL") ?? "http://127.0.0.1:8787",
  EDGEKV_READ_URL: Deno.env.get("EDGEKV_READ_URL"),
  EDGEKV_TOKEN: Deno.env.get("EDGEKV_TOKEN"),
};

Deno.serve({ port: Number(Deno.env.get("PORT") ?? 8080), hostname: "127.0.0.1" }, (request) => worker.fetch(request, env));
