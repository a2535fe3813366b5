export { acquireGpu, Gpu, reportAdapter, WEBGPU_DEFAULT_LIMITS, type AdapterReport } from './device.ts';
export { GpuError, withErrorScopes } from './errors.ts';
export { KernelChoices, parseForcedKernels, type ForcedKernels, type KernelChoiceStore } from './kernel-choices.ts';
export { MEMORY_CATEGORIES, MemoryLedger, type LedgerReport, type MemoryCategory } from './ledger.ts';
export { allocationBytes, BufferPool, fmtBytes, sizeClass } from './pool.ts';
export { Params, Recorder, type Kernel } from './recorder.ts';
export { resolveShader, type ShaderConstants, type ShaderSources } from './shader-library.ts';
export {
  describe,
  numelOf,
  storageBytes,
  tensorBytes,
  tensorView,
  type DType,
  type HostArray,
  type Tensor,
  type TensorSpec,
} from './tensor.ts';
export {
  createTensor,
  readBytes,
  readF32,
  readTensor,
  releaseTensor,
  tensorSpec,
  uploadTensor,
  writeTensor,
  zerosTensor,
} from './transfer.ts';
