// npm run bench [-- --browser] [--filter REGEX] [--runs N] [--full]
// Prints a table and writes bench/results.json (one object per case). Never asserted in tests.
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatTable, runCases } from '../bench/runner.ts';
import type { BenchResult } from '../bench/types.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const flag = (name: string) => args.includes(`--${name}`);
const value = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const runs = Number(value('runs') ?? 5);
const filter = value('filter');

interface Report {
  runtime: string;
  adapter: { vendor: string; architecture: string; description: string };
  date: string;
  results: BenchResult[];
}

async function inNode(): Promise<Report> {
  const { nodeGpu } = await import('../src/engine/node-gpu.ts');
  const { nodeShaders } = await import('../src/engine/shaders.node.ts');
  const { loadNodeCases } = await import('../bench/node-cases.ts');
  const { gpu, close } = await nodeGpu(nodeShaders());
  try {
    const results = await runCases(gpu, await loadNodeCases(), {
      runs,
      filter,
      full: flag('full'),
      log: (l) => console.error(l),
    });
    return { runtime: 'node+dawn', adapter: gpu.adapter, date: new Date().toISOString(), results };
  } finally {
    close();
  }
}

async function inBrowser(): Promise<Report> {
  const { createServer } = await import('vite');
  const { chromium } = await import('playwright');
  const { CHROMIUM_PATH, CHROMIUM_WEBGPU_ARGS } = await import('./chromium.ts');
  const server = await createServer({
    root,
    configFile: join(root, 'vite.config.ts'),
    server: { port: 0, host: '127.0.0.1' },
    logLevel: 'error',
  });
  await server.listen();
  const url = server.resolvedUrls?.local[0];
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_WEBGPU_ARGS });
  try {
    const page = await browser.newPage();
    page.on('console', (m) => console.error(`[browser] ${m.text()}`));
    const q = new URLSearchParams({ runs: String(runs), ...(filter ? { filter } : {}) });
    if (flag('full')) q.set('full', '1');
    await page.goto(`${url}bench/browser.html?${q}`);
    await page.waitForFunction(() => (window as any).__bench || (window as any).__benchError, null, {
      timeout: 0,
      polling: 1000,
    });
    const err = await page.evaluate(() => (window as any).__benchError);
    if (err) throw new Error(`bench failed in Chromium: ${err}`);
    const { adapter, results } = await page.evaluate(() => (window as any).__bench);
    return { runtime: 'chromium', adapter, date: new Date().toISOString(), results };
  } finally {
    await browser.close();
    await server.close();
  }
}

const report = flag('browser') ? await inBrowser() : await inNode();
console.log(
  `\n${report.runtime} on ${report.adapter.vendor} ${report.adapter.architecture} ${report.adapter.description}\n`,
);
console.log(formatTable(report.results));
const outFile = join(root, 'bench', 'results.json');
mkdirSync(dirname(outFile), { recursive: true });
// results.json keeps the latest report per runtime, so Node and Chromium numbers sit side by side.
const previous = existsSync(outFile) ? (JSON.parse(readFileSync(outFile, 'utf8')) as Record<string, unknown>) : {};
const all = (previous.byRuntime ?? {}) as Record<string, Report>;
if (filter && all[report.runtime]) {
  const kept = all[report.runtime].results.filter((r) => !report.results.some((n) => n.name === r.name));
  report.results = [...kept, ...report.results];
}
all[report.runtime] = report;
// Other sections (the real-size rows under "real", written by scripts/real-size.ts) are kept.
writeFileSync(outFile, JSON.stringify({ ...previous, results: report.results, byRuntime: all }, null, 2) + '\n');
console.log(`\nwrote ${outFile}`);
