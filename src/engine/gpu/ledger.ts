/** What a GPU allocation is for; the memory planner predicts the same categories. */
export const MEMORY_CATEGORIES = ['weights', 'adapters', 'gradients', 'optimizer', 'activations', 'scratch'] as const;
export type MemoryCategory = (typeof MEMORY_CATEGORIES)[number];

export interface LedgerReport {
  /** Bytes in live use now, by category. */
  current: Record<MemoryCategory, number>;
  /** Highest in-use bytes each category reached. */
  peak: Record<MemoryCategory, number>;
  /** Bytes held by the pool for reuse (allocated on the GPU, not in use). */
  pooledFree: number;
  /** Highest total of GPU bytes allocated at once (in use + pooled free). */
  peakAllocated: number;
  allocated: number;
}

const zeros = (): Record<MemoryCategory, number> =>
  Object.fromEntries(MEMORY_CATEGORIES.map((c) => [c, 0])) as Record<MemoryCategory, number>;

/** Byte accounting for every GPU buffer the engine creates. */
export class MemoryLedger {
  private current = zeros();
  private peak = zeros();
  private pooledFree = 0;
  private peakAllocated = 0;

  take(category: MemoryCategory, bytes: number, fromPool: boolean): void {
    if (fromPool) this.pooledFree -= bytes;
    this.current[category] += bytes;
    this.peak[category] = Math.max(this.peak[category], this.current[category]);
    this.peakAllocated = Math.max(this.peakAllocated, this.allocated);
  }

  give(category: MemoryCategory, bytes: number, keepPooled: boolean): void {
    this.current[category] -= bytes;
    if (keepPooled) this.pooledFree += bytes;
  }

  dropPooled(bytes: number): void {
    this.pooledFree -= bytes;
  }

  get allocated(): number {
    let sum = this.pooledFree;
    for (const c of MEMORY_CATEGORIES) sum += this.current[c];
    return sum;
  }

  /** Starts a new measurement window (peaks become the current values). */
  resetPeaks(): void {
    this.peak = { ...this.current };
    this.peakAllocated = this.allocated;
  }

  report(): LedgerReport {
    return {
      current: { ...this.current },
      peak: { ...this.peak },
      pooledFree: this.pooledFree,
      peakAllocated: this.peakAllocated,
      allocated: this.allocated,
    };
  }
}
