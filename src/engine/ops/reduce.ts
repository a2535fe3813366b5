// Which workgroup reduction the reducing kernels (RMSNorm, cross-entropy, grad norm, preference
// log-probs) compile with: the barrier tree of shaders/include/reduce.wgsl, or the subgroup one of
// shaders/include/reduce_subgroup.wgsl where the adapter has the `subgroups` feature. The choice is
// one per adapter, measured by tuneReductions (ops/tuner.ts) like the matmul variants.
import type { Gpu } from '../gpu/device.ts';
import { GpuError } from '../gpu/errors.ts';
import type { ShaderConstants } from '../gpu/shader-library.ts';

export type ReduceVariant = 'tree' | 'subgroup';
export const REDUCE_VARIANT_NAMES: readonly ReduceVariant[] = ['tree', 'subgroup'];
/** The kernel-choice family and its one shape class. */
export const REDUCE_FAMILY = 'reduce';
export const REDUCE_CLASS = 'all';

const INCLUDE: Record<ReduceVariant, string> = { tree: 'reduce', subgroup: 'reduce_subgroup' };

/** The variants this adapter can run (subgroup needs the feature on the device). */
export function reduceVariants(gpu: Gpu): ReduceVariant[] {
  return gpu.hasFeature('subgroups') ? ['tree', 'subgroup'] : ['tree'];
}

/** The reduction serving this adapter: forced (TABTUNE_KERNELS=reduce=…), tuned, else the tree. */
export function reduceVariant(gpu: Gpu): ReduceVariant {
  const v = gpu.kernels.pick(REDUCE_FAMILY, REDUCE_CLASS, REDUCE_VARIANT_NAMES, 'tree');
  if (!reduceVariants(gpu).includes(v))
    throw new GpuError('validation', 'reduce kernel', `variant "${v}" needs the adapter's "subgroups" feature`);
  return v;
}

/** The `{{REDUCE}}` include constant of the reducing shaders. */
export function reduceConstants(gpu: Gpu, variant: ReduceVariant = reduceVariant(gpu)): ShaderConstants {
  return { REDUCE: INCLUDE[variant] };
}
