#!/usr/bin/env node
// `npm run bench` lists the benchmarks; `npm run bench -- <name> [args]` runs one.
// Each benchmark is a TypeScript file in this folder, run through vite-node (comes with
// vitest), and ends with machine-readable `RESULT <name>=<value> <unit>` lines.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const benches = readdirSync(here)
  .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'))
  .map((f) => f.slice(0, -3))
  .sort();
// Federated experiments (issue 6): bench/experiments/<name>.ts, run as `experiments/<name>`.
const experiments = ['busbra', 'pneumonia'];
const runnable = [...benches, ...experiments.map((e) => `experiments/${e}`)];

const [name, ...args] = process.argv.slice(2);
if (!name) {
  console.log('benchmarks (npm run bench -- <name> [args]):');
  for (const b of runnable) {
    const doc = readFileSync(path.join(here, `${b}.ts`), 'utf8').match(/\/\*\*\s*\n\s*\*\s*(.+)/);
    console.log(`  ${b.padEnd(22)} ${doc ? doc[1] : ''}`);
  }
  process.exit(0);
}
if (!runnable.includes(name)) {
  console.error(`unknown benchmark "${name}"; one of: ${runnable.join(', ')}`);
  process.exit(2);
}
const vite = path.join(here, '..', 'node_modules', '.bin', 'vite-node');
const res = spawnSync(vite, [path.join(here, `${name}.ts`), '--', ...args], { stdio: 'inherit' });
process.exit(res.status ?? 1);
