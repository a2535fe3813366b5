// Which engine functions exist in this build. The engine lands piece by piece; a studio step is
// offered only when the functions it calls are really there (never a fake result). Modules are
// found with import.meta.glob, so a file that does not exist yet is simply absent from the map.
const MODULES = import.meta.glob([
  '../engine/model/*.ts', '../engine/train/*.ts', '../engine/generate/*.ts', '../engine/export/*.ts', '../engine/plan/*.ts',
  '!../engine/**/node-*.ts', '!../engine/**/*.node.ts',
]);

export type Feature = 'plan' | 'load' | 'lora' | 'forward' | 'train' | 'generate' | 'exportMerged' | 'exportPeft';

/** Export names the studio calls, per feature (API in the engine contracts). */
const NEEDS: Record<Feature, string[]> = {
  plan: ['planMemory'],
  load: ['loadModel'],
  lora: ['attachLora'],
  forward: ['forwardLogits', 'KvCache'],
  train: ['Trainer'],
  generate: ['sampleToken'],
  exportMerged: ['exportMerged'],
  exportPeft: ['exportPeft'],
};

const found = new Map<string, unknown>();
let scanned: Promise<void> | null = null;

async function scan(): Promise<void> {
  for (const [path, load] of Object.entries(MODULES)) {
    try {
      const mod = (await load()) as Record<string, unknown>;
      for (const [k, v] of Object.entries(mod)) if (!found.has(k) && (typeof v === 'function')) found.set(k, v);
    } catch {
      // a module that fails to load (work in progress) provides nothing
    }
  }
}

export async function engineExports(): Promise<Map<string, unknown>> {
  scanned ??= scan();
  await scanned;
  return found;
}

export interface FeatureReport {
  available: Record<Feature, boolean>;
  /** Per feature, the export names that are missing. */
  missing: Record<Feature, string[]>;
}

export async function featureReport(): Promise<FeatureReport> {
  const ex = await engineExports();
  const available = {} as Record<Feature, boolean>;
  const missing = {} as Record<Feature, string[]>;
  for (const [f, names] of Object.entries(NEEDS) as [Feature, string[]][]) {
    missing[f] = names.filter((n) => !ex.has(n));
    available[f] = missing[f].length === 0;
  }
  return { available, missing };
}

/** An engine export by name, typed by the caller against the contract. */
export async function engineFn<T>(name: string): Promise<T | null> {
  return ((await engineExports()).get(name) as T | undefined) ?? null;
}
