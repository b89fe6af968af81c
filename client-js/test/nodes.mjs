// Real `edgekv serve` processes for the tests: started here, on free ports, with
// tokens and a cluster secret (as a deployment runs), and killed when the test file's process exits.
import { spawn, execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

// Cleanup runs when the test file's process exits (synchronously): node:test's `after`
// would stop a node started in a `before` hook as soon as that hook ends.
const cleanups = [];
const after = (cleanup) => cleanups.unshift(cleanup);
process.on("exit", () => {
  for (const cleanup of cleanups) {
    try {
      cleanup();
    } catch (error) {
      console.error("cleanup failed:", error);
    }
  }
});

const PYTHON = process.env.PYTHON ?? "python3";
export const PG_DSN = process.env.EDGEKV_TEST_PG_DSN ?? "postgresql://postgres@127.0.0.1:5432/test";
const READY = /serving (https?:\/\/\S+) node=([0-9a-f]+)/;

const newToken = () => "ekv_" + randomBytes(24).toString("base64url");
const tokenToml = (name, token, scopes) =>
  `[[tokens]]\nname = "${name}"\nhash = "sha256:${createHash("sha256").update(token).digest("hex")}"\n` +
  `scopes = [${scopes.map((s) => `"${s}"`).join(", ")}]\n`;

/** Credentials shared by the nodes of one test file: an admin token, a read-only one, a secret. */
export function credentials() {
  const dir = mkdtempSync(join(tmpdir(), "edgekv-js-"));
  const token = newToken();
  const readToken = newToken();
  const config = join(dir, "edgekv.toml");
  writeFileSync(config, tokenToml("admin", token, ["admin"]) + tokenToml("reader", readToken, ["read:*"]));
  const secret = join(dir, "cluster-secret");
  writeFileSync(secret, randomBytes(24).toString("base64url") + "\n", { mode: 0o600 });
  after(() => rmSync(dir, { recursive: true, force: true }));
  return { dir, token, readToken, args: ["--config", config, "--cluster-secret-file", secret] };
}

/**
 * Start a node; it is killed (and its data removed) when the test file ends.
 * Resolves to `{ url, nodeId, token, readToken, stop, dataDir }`; `dataDir` and `port`
 * (default: a fresh directory, a free port) restart a stopped node where it was.
 */
export async function startNode(creds, name, args = [], { dataDir = mkdtempSync(join(creds.dir, `${name}-`)), port = 0 } = {}) {
  const child = spawn(
    PYTHON,
    ["-m", "edgekv", "serve", "--data-dir", dataDir, "--port", String(port), "--node-name", name, ...creds.args, ...args],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  const ready = new Promise((resolve, reject) => {
    const look = (chunk) => {
      output += chunk;
      const match = READY.exec(output);
      if (match) resolve({ url: match[1], nodeId: match[2] });
    };
    child.stdout.setEncoding("utf8").on("data", look);
    child.stderr.setEncoding("utf8").on("data", look);
    child.on("exit", (code) => reject(new Error(`node ${name} exited (${code}) before serving:\n${output}`)));
  });
  const stop = () => {
    if (child.exitCode === null) child.kill("SIGKILL");
  };
  after(stop);
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    const { url, nodeId } = await ready;
    // The node must not keep the test process alive: it is killed when that process exits.
    child.unref();
    child.stdout.unref();
    child.stderr.unref();
    return { url, nodeId, token: creds.token, readToken: creds.readToken, stop, output: () => output, dataDir };
  } finally {
    clearTimeout(timer);
  }
}

/** Poll `check` until it returns a truthy value (or throw after `timeout` ms). */
export async function waitFor(check, what, timeout = 20_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** The node's cluster status document (admin token). */
export async function status(node) {
  const answer = await fetch(`${node.url}/v1/cluster/status`, { headers: { authorization: `Bearer ${node.token}` } });
  return answer.json();
}

/** Start two PoPs that replicate with each other (B seeds from A; discovery links A to B). */
export async function startPair(creds, args = []) {
  const a = await startNode(creds, "pop-a", args);
  const b = await startNode(creds, "pop-b", ["--peer", a.url, ...args]);
  const linked = async (node) => (await status(node)).members.some((m) => m.state === "up");
  await waitFor(async () => (await linked(a)) && (await linked(b)), "the two PoPs to link");
  return [a, b];
}

/** A node with a PostgreSQL upstream and strong namespace `bank`; its schema is dropped at the end. */
export async function startStrongNode(creds, name = "strong") {
  const schema = `edgekv_js_${process.pid}_${randomBytes(4).toString("hex")}`;
  after(() => dropSchema(schema));
  const node = await startNode(creds, name, [
    "--upstream", PG_DSN, "--upstream-schema", schema, "--strong-namespaces", "bank", "--upstream-timeout", "10",
  ]);
  await waitFor(async () => (await status(node)).upstream?.state === "up", "the upstream to connect");
  return node;
}

function dropSchema(schema) {
  // Through the project's own PostgreSQL driver: nothing else needs to be installed.
  const script = [
    "import asyncio, sys, asyncpg",
    "async def main():",
    "    conn = await asyncpg.connect(sys.argv[1])",
    "    await conn.execute(f'DROP SCHEMA IF EXISTS {sys.argv[2]} CASCADE')",
    "    await conn.close()",
    "asyncio.run(main())",
  ].join("\n");
  execFileSync(PYTHON, ["-c", script, PG_DSN, schema], { stdio: "inherit" });
}
