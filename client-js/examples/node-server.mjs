// Serves the Workers-style handler (worker.mjs) from Node's http server.
//
//   edgekv demo                                   # three PoPs on 8787-8789
//   EDGEKV_URL=http://127.0.0.1:8787 EDGEKV_READ_URL=http://127.0.0.1:8788 node examples/node-server.mjs
//   curl -X PUT --data '{"enabled": true, "rollout": 50}' http://127.0.0.1:8787/v1/kv/flags/new-checkout
//   curl 'http://127.0.0.1:8080/?user=ann'
//   curl -i --data 'name=Ann' 'http://127.0.0.1:8080/profile?user=ann'   # then GET it with the cookie
import { createServer } from "node:http";
import { Readable } from "node:stream";
import worker from "./worker.mjs";

const env = {
  EDGEKV_URL: process.env.EDGEKV_URL ?? "http://127.0.0.1:8787",
  EDGEKV_READ_URL: process.env.EDGEKV_READ_URL,
  EDGEKV_TOKEN: process.env.EDGEKV_TOKEN,
};

const server = createServer(async (req, res) => {
  try {
    const body = req.method === "GET" || req.method === "HEAD" ? undefined : Readable.toWeb(req);
    const request = new Request(`http://${req.headers.host}${req.url}`, { method: req.method, headers: req.headers, body, duplex: "half" });
    const response = await worker.fetch(request, env);
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(Buffer.from(await response.arrayBuffer()));
  } catch (error) {
    res.writeHead(502, { "content-type": "text/plain" }).end(`EdgeKV: ${error}\n`);
  }
});

server.listen(Number(process.env.PORT ?? 8080), "127.0.0.1", () => {
  console.log(`serving http://127.0.0.1:${server.address().port}`);
});
