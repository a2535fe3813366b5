// Which verified variant of a kernel family serves a shape class on this adapter. Variants are
// chosen by timing them on the adapter itself (src/engine/ops/tuner.ts), never by guessing from
// the adapter's name; a forced choice (TABTUNE_KERNELS in Node, ?kernels= in the studio) wins
// over both, so tests and bug reports can pin one.
import { GpuError } from './errors.ts';

/** family → variant, e.g. { matmul: 'register8x8' }. */
export type ForcedKernels = Readonly<Record<string, string>>;

/** Parses "matmul=register8x8,rmsnorm=plain" (empty or undefined: nothing forced). */
export function parseForcedKernels(spec: string | undefined): ForcedKernels {
  const forced: Record<string, string> = {};
  for (const part of (spec ?? '').split(',').map((s) => s.trim())) {
    if (!part) continue;
    const m = /^([\w-]+)=([\w-]+)$/.exec(part);
    if (!m) throw new GpuError('validation', 'kernel choice', `"${part}" is not family=variant (e.g. matmul=tiled64)`);
    forced[m[1]] = m[2];
  }
  return forced;
}

export class KernelChoices {
  private readonly tuned = new Map<string, string>();

  constructor(readonly forced: ForcedKernels = {}) {}

  /** The variant for `family` at `shapeClass`: forced, else tuned, else `fallback`. */
  pick<V extends string>(family: string, shapeClass: string, variants: readonly V[], fallback: V): V {
    const forced = this.forced[family];
    if (forced !== undefined) {
      if (!(variants as readonly string[]).includes(forced)) {
        throw new GpuError(
          'validation',
          `${family} kernel`,
          `forced variant "${forced}" is not one of ${variants.join(', ')}`,
        );
      }
      return forced as V;
    }
    const tuned = this.tuned.get(key(family, shapeClass));
    return tuned !== undefined && (variants as readonly string[]).includes(tuned) ? (tuned as V) : fallback;
  }

  isForced(family: string): boolean {
    return this.forced[family] !== undefined;
  }

  has(family: string, shapeClass: string): boolean {
    return this.tuned.has(key(family, shapeClass));
  }

  set(family: string, shapeClass: string, variant: string): void {
    this.tuned.set(key(family, shapeClass), variant);
  }

  /** Every tuned choice, "family:class" → variant (what a store keeps). */
  toRecord(): Record<string, string> {
    return Object.fromEntries(this.tuned);
  }

  /** Adds stored choices (from a store written for this adapter and these shaders). */
  restore(record: Readonly<Record<string, string>>): void {
    for (const [k, v] of Object.entries(record)) if (typeof v === 'string') this.tuned.set(k, v);
  }
}

function key(family: string, shapeClass: string): string {
  return `${family}:${shapeClass}`;
}

/** Where tuned choices persist between runs: IndexedDB in the browser, a cache file in Node. */
export interface KernelChoiceStore {
  load(adapterKey: string): Promise<Record<string, string> | undefined>;
  save(adapterKey: string, choices: Record<string, string>): Promise<void>;
}
