import { GpuError, insideErrorScopes } from './errors.ts';
import { MemoryLedger, type MemoryCategory } from './ledger.ts';
import { BUF } from './usage.ts';

export interface PooledBuffer {
  readonly buffer: GPUBuffer;
  /** Bytes actually allocated (see allocationBytes). */
  readonly size: number;
  category: MemoryCategory;
  released: boolean;
}

const STORAGE_USAGE = BUF.STORAGE | BUF.COPY_SRC | BUF.COPY_DST;

/**
 * Size classes: multiples of 256 B up to 64 KiB, then 8 steps per power of two, so a
 * released activation buffer is reused by the next one of similar size (≤ 12.5 % waste).
 */
export function sizeClass(bytes: number): number {
  const b = Math.max(4, Math.ceil(bytes));
  if (b <= 65536) return Math.ceil(b / 256) * 256;
  const pow = 2 ** Math.floor(Math.log2(b));
  const step = pow / 8;
  return Math.ceil(b / step) * step;
}

/**
 * What lives as long as a model or a run (weights, adapters, their gradients and optimizer
 * state) is allocated at its exact size and freed on release: a size class would waste up to
 * 12.5 % of the biggest allocations (0.35 GB of a 7B model's NF4 weights) for reuse that never
 * comes, since such buffers are made once.
 */
const EXACT_CATEGORIES: ReadonlySet<MemoryCategory> = new Set(['weights', 'adapters', 'gradients', 'optimizer']);

/** Bytes the pool allocates for a request of `bytes` in `category` (the planner uses the same rule). */
export function allocationBytes(bytes: number, category: MemoryCategory): number {
  return EXACT_CATEGORIES.has(category) ? Math.max(4, Math.ceil(bytes / 4) * 4) : sizeClass(bytes);
}

/** Storage buffers by size class, with every byte recorded in the ledger. */
export class BufferPool {
  private readonly free = new Map<number, GPUBuffer[]>();
  readonly ledger = new MemoryLedger();
  /**
   * GPU bytes the engine may hold at once (in use + pooled), or null for no cap. A tab shares
   * the GPU with everything else the user runs: a run keeps to the budget the user gave, and an
   * allocation past it fails as the device's own out-of-memory error would.
   */
  budget: number | null = null;
  /** Out-of-memory scopes of buffers created since the last check (see checkAllocations). */
  private pendingScopes: Promise<GpuError | null>[] = [];

  constructor(
    private readonly device: GPUDevice,
    private readonly maxBufferSize: number,
  ) {}

  acquire(bytes: number, category: MemoryCategory, label: string): PooledBuffer {
    const size = allocationBytes(bytes, category);
    if (size > this.maxBufferSize) {
      throw new GpuError(
        'limit',
        label,
        `needs a ${fmtBytes(size)} buffer; this GPU allows at most ${fmtBytes(this.maxBufferSize)} per buffer`,
      );
    }
    const cached = this.free.get(size)?.pop();
    if (cached) {
      cached.label = label;
      this.ledger.take(category, size, true);
      return { buffer: cached, size, category, released: false };
    }
    this.keepToBudget(size, label);
    const buffer = this.createChecked({ size, usage: STORAGE_USAGE, label });
    this.ledger.take(category, size, false);
    return { buffer, size, category, released: false };
  }

  /** Frees pooled buffers when a new one would pass the budget, then refuses if it still would. */
  private keepToBudget(size: number, label: string): void {
    if (this.budget === null || this.ledger.allocated + size <= this.budget) return;
    this.trim();
    if (this.ledger.allocated + size > this.budget)
      throw new GpuError(
        'out-of-memory',
        label,
        `needs ${fmtBytes(size)} more while ${fmtBytes(this.ledger.allocated)} of the ${fmtBytes(this.budget)} GPU memory budget is in use`,
      );
  }

  /**
   * createBuffer reports running out of GPU memory only through an error scope, asynchronously:
   * each creation gets one, and checkAllocations() (run before every submit) turns a failure
   * into a GpuError naming the buffer instead of an "invalid buffer" error at its first use.
   */
  private createChecked(desc: GPUBufferDescriptor): GPUBuffer {
    // Inside withErrorScopes the caller's scope reports it, with the caller's context.
    if (insideErrorScopes()) return this.device.createBuffer(desc);
    this.device.pushErrorScope('out-of-memory');
    const buffer = this.device.createBuffer(desc);
    this.pendingScopes.push(
      this.device.popErrorScope().then(
        (e) => (e ? new GpuError('out-of-memory', String(desc.label), e.message) : null),
        () => null,
      ),
    );
    return buffer;
  }

  /** Throws the first out-of-memory error of the buffers created since the last call. */
  async checkAllocations(): Promise<void> {
    if (!this.pendingScopes.length) return;
    const pending = this.pendingScopes;
    this.pendingScopes = [];
    const failed = (await Promise.all(pending)).find((e) => e !== null);
    if (failed) throw failed;
  }

  /** A buffer with other usages (readback staging, uniforms): never pooled, destroyed on release. */
  acquireSpecial(bytes: number, usage: number, category: MemoryCategory, label: string): PooledBuffer {
    const size = Math.ceil(bytes / 4) * 4;
    this.keepToBudget(size, label);
    const buffer = this.createChecked({ size, usage, label });
    this.ledger.take(category, size, false);
    return { buffer, size, category, released: false };
  }

  release(b: PooledBuffer): void {
    if (EXACT_CATEGORIES.has(b.category)) return this.destroy(b);
    if (b.released) throw new Error(`buffer "${b.buffer.label}" released twice`);
    b.released = true;
    this.ledger.give(b.category, b.size, true);
    const list = this.free.get(b.size) ?? [];
    list.push(b.buffer);
    this.free.set(b.size, list);
  }

  /** Frees a buffer on the GPU now instead of keeping it for reuse (weights, big one-offs). */
  destroy(b: PooledBuffer): void {
    if (b.released) throw new Error(`buffer "${b.buffer.label}" released twice`);
    b.released = true;
    this.ledger.give(b.category, b.size, false);
    b.buffer.destroy();
  }

  /** Gives every pooled free buffer back to the GPU. */
  trim(): void {
    for (const [size, list] of this.free) {
      for (const buf of list) {
        buf.destroy();
        this.ledger.dropPooled(size);
      }
    }
    this.free.clear();
  }
}

export function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}
