// `get` of a 100-byte value over keep-alive, against a bare `fetch` of the same URL, side by
// side in one run (issue 19: the client keeps >= 90% of bare fetch's rate in Node).
// `npm run bench` (REQUESTS in the environment shortens or lengthens it).
import { EdgeKV } from "../dist/index.js";
import { credentials, startNode } from "../test/nodes.mjs";

const REQUESTS = Number(process.env.REQUESTS ?? 5000);

const node = await startNode(credentials(), "bench");
const kv = new EdgeKV({ url: node.url, token: node.token });
const flags = kv.namespace("bench");
const value = "x".repeat(100);
await flags.put("k100", value);
const url = `${node.url}/v1/kv/bench/k100`;
const headers = { authorization: `Bearer ${node.token}` };

const contenders = {
  bare: async () => {
    const response = await fetch(url, { headers });
    if (!response.ok) throw new Error(`status ${response.status}`);
    return response.text();
  },
  client: () => flags.get("k100"),
};

// Requests alternate one by one (bare, client, client, bare, ...), each timed alone: load
// on this shared machine drifts over seconds, and falls on both contenders alike this way.
const times = { bare: [], client: [] };
async function timed(name) {
  const start = performance.now();
  if ((await contenders[name]()) !== value) throw new Error("wrong value");
  times[name].push(performance.now() - start);
}
for (let i = 0; i < 200; i++) for (const name of ["bare", "client"]) await timed(name); // warm-up
times.bare.length = times.client.length = 0;
for (let i = 0; i < REQUESTS; i++) {
  for (const name of i % 2 ? ["client", "bare"] : ["bare", "client"]) await timed(name);
}
const total = (xs) => xs.reduce((x, y) => x + y, 0);
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const rate = (name) => (1000 * REQUESTS) / total(times[name]);
const ratio = rate("client") / rate("bare");
console.log(`${REQUESTS} sequential GETs of 100 B each way, keep-alive, alternating, Node ${process.version}`);
for (const name of ["bare", "client"]) {
  console.log(`${name.padEnd(6)} ${rate(name).toFixed(0)} req/s, median ${(median(times[name]) * 1000).toFixed(0)} us`);
}
console.log(`ratio client/bare: ${ratio.toFixed(3)} (medians: ${(median(times.bare) / median(times.client)).toFixed(3)})`);
if (ratio < 0.9) process.exitCode = 1;
