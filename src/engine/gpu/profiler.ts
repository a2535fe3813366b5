/**
 * GPU time per kernel from timestamp queries, for finding where a step's time goes (real-size
 * --profile). While a Gpu has a profiler, every dispatch runs in a compute pass of its own whose
 * beginning and end are stamped; the stamps are read back after the queue runs them.
 * Kernels that differ only in their layer are summed under one name.
 */

/** WebGPU caps a query set at 4096 queries: two per dispatch. */
const PASSES_PER_SET = 2048;

export interface KernelTime {
  kernel: string;
  ms: number;
  count: number;
}

export interface PassStamps {
  set: GPUQuerySet;
  whats: string[];
}

export class DispatchProfiler {
  private readonly totals = new Map<string, { ms: number; count: number }>();
  private readonly pending: Promise<void>[] = [];

  constructor(private readonly device: GPUDevice) {}

  /** Timestamp writes for the next dispatch's pass (new query sets as they fill). */
  passStamps(open: PassStamps[], what: string): GPUComputePassTimestampWrites {
    let last = open[open.length - 1];
    if (!last || last.whats.length === PASSES_PER_SET) {
      last = { set: this.device.createQuerySet({ type: 'timestamp', count: 2 * PASSES_PER_SET }), whats: [] };
      open.push(last);
    }
    const i = last.whats.length;
    last.whats.push(what);
    return { querySet: last.set, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 };
  }

  /** Resolves the stamps into `encoder` (before it is finished); returns what to call right after the submit. */
  resolve(encoder: GPUCommandEncoder, open: PassStamps[]): () => void {
    const reads: { read: GPUBuffer; whats: string[]; set: GPUQuerySet }[] = [];
    const staging: GPUBuffer[] = [];
    for (const s of open) {
      const bytes = 16 * s.whats.length;
      const resolved = this.device.createBuffer({
        size: bytes,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      });
      const read = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      encoder.resolveQuerySet(s.set, 0, 2 * s.whats.length, resolved, 0);
      encoder.copyBufferToBuffer(resolved, 0, read, 0, bytes);
      reads.push({ read, whats: s.whats, set: s.set });
      staging.push(resolved);
    }
    open.length = 0;
    return () => {
      // Destroying a buffer after its submit is allowed: it goes once the queue is done with it.
      for (const b of staging) b.destroy();
      for (const r of reads) this.pending.push(this.collect(r.read, r.whats, r.set));
    };
  }

  private async collect(read: GPUBuffer, whats: string[], set: GPUQuerySet): Promise<void> {
    await read.mapAsync(GPUMapMode.READ);
    const ns = new BigUint64Array(read.getMappedRange().slice(0));
    read.destroy();
    set.destroy();
    whats.forEach((what, i) => {
      const key = kernelName(what);
      const t = this.totals.get(key) ?? { ms: 0, count: 0 };
      // A driver may stamp the end before the beginning when a pass is empty; count that as 0.
      const d = ns[2 * i + 1] > ns[2 * i] ? Number(ns[2 * i + 1] - ns[2 * i]) / 1e6 : 0;
      t.ms += d;
      t.count++;
      this.totals.set(key, t);
    });
  }

  /** Every kernel's summed time, longest first (waits for the stamps still in flight). */
  async report(): Promise<KernelTime[]> {
    await Promise.all(this.pending.splice(0));
    return [...this.totals].map(([kernel, t]) => ({ kernel, ...t })).sort((a, b) => b.ms - a.ms);
  }
}

/** "matmul model.layers.7.mlp.up_proj.weight[…]" and layer 8's are one kernel for the report. */
export function kernelName(what: string): string {
  return what.replace(/\.\d+\./g, '.N.');
}
