// The studio's memory of which kernel variants won on this adapter (src/engine/ops/tuner.ts), so
// only the first run on a GPU pays for the measurement.
import { createStore, get, set, type UseStore } from 'idb-keyval';
import type { KernelChoiceStore } from '../engine/gpu/kernel-choices.ts';

let storeRef: UseStore | null = null;
const store = () => (storeRef ??= createStore('tabtune-kernels', 'choices'));

export const browserKernelStore: KernelChoiceStore = {
  load: (adapterKey) => get<Record<string, string>>(adapterKey, store()),
  save: (adapterKey, choices) => set(adapterKey, choices, store()),
};
