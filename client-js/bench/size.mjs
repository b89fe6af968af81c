// The client's size as an edge function ships it: bundled, minified, gzipped (issue 19: <= 8 KiB).
// `npm run size` (after a build). Prints the figures for docs/performance.md; exits 1 over budget.
import { build } from "esbuild";
import { gzipSync } from "node:zlib";

const BUDGET = 8 * 1024;
const result = await build({
  entryPoints: [new URL("../dist/index.js", import.meta.url).pathname],
  bundle: true,
  minify: true,
  format: "esm",
  platform: "neutral",
  write: false,
});
const code = result.outputFiles[0].contents;
const gzipped = gzipSync(code, { level: 9 }).length;
console.log(`minified ${code.length} B, gzipped ${gzipped} B (budget ${BUDGET} B)`);
if (gzipped > BUDGET) process.exitCode = 1;
