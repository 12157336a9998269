// The page's weight after `npm run build`: each script in dist/assets,
// minified and gzipped, and the total against a budget — the page must not
// grow a framework-sized dependency for one feature unnoticed. The figures
// are in the README ("The page").

import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

/** What the first paint needs, and everything together, gzipped. */
const BUDGET_FIRST_KB = 100;
const BUDGET_TOTAL_KB = 220;

const assets = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "dist", "assets");
const html = readFileSync(path.join(assets, "..", "index.html"), "utf8");
let total = 0;
let first = 0;
for (const name of readdirSync(assets).filter((n) => n.endsWith(".js") || n.endsWith(".css")).sort()) {
  const bytes = readFileSync(path.join(assets, name));
  const kb = gzipSync(bytes, { level: 9 }).length / 1024;
  const upfront = html.includes(`/assets/${name}`);
  total += kb;
  if (upfront) first += kb;
  console.log(`${name.padEnd(32)} ${(bytes.length / 1024).toFixed(1).padStart(7)} KiB  ${kb.toFixed(1).padStart(6)} KiB gzipped${upfront ? "  (first paint)" : ""}`);
}
console.log(`first paint ${first.toFixed(1)} KiB gzipped (budget ${BUDGET_FIRST_KB}); everything ${total.toFixed(1)} KiB (budget ${BUDGET_TOTAL_KB})`);
if (first > BUDGET_FIRST_KB || total > BUDGET_TOTAL_KB) {
  console.error("over budget: see what grew before raising it");
  process.exit(1);
}
