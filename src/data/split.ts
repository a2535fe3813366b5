// max_samples and val_size, LLaMA-Factory style: max_samples keeps the first N rows of a dataset;
// val_size (a fraction < 1 or a row count ≥ 1) holds out a seeded random subset. The shuffle is our
// own seeded PRNG, so the held-out rows differ from LLaMA-Factory's numpy-based split for the same seed.
import { mulberry32 } from './hash.ts';

export function takeMaxSamples<T>(items: T[], maxSamples?: number): T[] {
  return maxSamples !== undefined && maxSamples >= 0 && maxSamples < items.length ? items.slice(0, maxSamples) : items;
}

export function splitTrainVal<T>(items: T[], valSize: number | undefined, seed = 42): { train: T[]; val: T[] } {
  if (!valSize || valSize <= 0 || items.length < 2) return { train: items, val: [] };
  const nVal =
    valSize < 1 ? Math.max(1, Math.round(items.length * valSize)) : Math.min(Math.floor(valSize), items.length - 1);
  const idx = items.map((_, i) => i);
  const rand = mulberry32(seed);
  for (let i = idx.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  const valSet = new Set(idx.slice(0, nVal));
  const train: T[] = [],
    val: T[] = [];
  items.forEach((it, i) => (valSet.has(i) ? val : train).push(it));
  return { train, val };
}
