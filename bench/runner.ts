import type { Gpu } from '../src/engine/gpu/device.ts';
import { Recorder } from '../src/engine/gpu/recorder.ts';
import type { BenchCase, BenchResult } from './types.ts';

export interface RunOptions {
  runs: number;
  filter?: string;
  full?: boolean;
  log?: (line: string) => void;
}

/** Warm-up once, then times `runs` iterations (encode + submit + wait for the queue). */
export async function runCases(gpu: Gpu, cases: BenchCase[], opts: RunOptions): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  const software = /swiftshader|llvmpipe|lavapipe/i.test(`${gpu.adapter.architecture} ${gpu.adapter.description}`);
  // --filter is a regular expression over case names (a plain word matches as a substring).
  const keep = opts.filter ? new RegExp(opts.filter, 'i') : null;
  for (const c of cases) {
    if (keep && !keep.test(c.name)) continue;
    if (c.heavy && software && !opts.full) {
      opts.log?.(`skip ${c.name} (${c.shape}): heavy on a software adapter; --full runs it`);
      continue;
    }
    const inst = await c.setup(gpu);
    try {
      let dispatches = 0;
      const once = async () => {
        const rec = new Recorder(gpu, `bench ${c.name}`);
        await inst.record(rec);
        const t0 = performance.now();
        await rec.submit();
        await gpu.device.queue.onSubmittedWorkDone();
        dispatches = rec.dispatchCount;
        return performance.now() - t0;
      };
      await once();
      const times: number[] = [];
      for (let i = 0; i < opts.runs; i++) times.push(await once());
      times.sort((a, b) => a - b);
      const median = times[Math.floor(times.length / 2)];
      const r: BenchResult = {
        name: c.name,
        shape: c.shape,
        ms_median: round(median),
        ms_min: round(times[0]),
        gflops: round(c.flops / (median * 1e6)),
        bytes_moved: c.bytesMoved,
        arithmetic_intensity: round(c.bytesMoved ? c.flops / c.bytesMoved : 0),
        dispatches,
        runs: opts.runs,
        ...(c.extra ? { extra: c.extra } : {}),
      };
      out.push(r);
      opts.log?.(`done ${c.name} ${c.shape}: ${r.ms_median} ms`);
    } finally {
      inst.cleanup();
      gpu.pool.trim();
    }
  }
  return out;
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

export function formatTable(results: BenchResult[]): string {
  const head = ['case', 'shape', 'ms (median)', 'ms (min)', 'GFLOP/s', 'MB moved', 'FLOP/B', 'dispatches', 'extra'];
  const rows = results.map((r) => [
    r.name,
    r.shape,
    r.ms_median.toFixed(2),
    r.ms_min.toFixed(2),
    r.gflops.toFixed(2),
    (r.bytes_moved / 1e6).toFixed(2),
    r.arithmetic_intensity.toFixed(1),
    String(r.dispatches),
    r.extra
      ? Object.entries(r.extra)
          .map(([k, v]) => `${k}=${v}`)
          .join(' ')
      : '',
  ]);
  const lines = [head, head.map(() => '---'), ...rows].map((cols) => `| ${cols.join(' | ')} |`);
  return lines.join('\n');
}
