// The model half of the engine: weights in, decoder forward/backward, generation forward.
export {
  computeInvFreq,
  expectedWeights,
  parseModelConfig,
  SUPPORTED_ARCHITECTURES,
  type ModelConfig,
} from './config.ts';
export { countLabels, prepareBatch, type HostBatch, type MicroBatch } from './batch.ts';
export { Decoder, type DecoderOptions } from './decoder.ts';
export { forwardLogits, KvCache } from './infer.ts';
export { loadModel, type LoadOptions } from './load.ts';
export {
  attachLora,
  isRowSplit,
  LINEAR_MODULES,
  LoraSet,
  Model,
  modulePrefix,
  resolveTargets,
  type LoraConfig,
  type LoraModuleState,
  type ModelWeight,
  type RowSplitWeight,
} from './model.ts';
export {
  memoryWeightSource,
  openModelFiles,
  storeWeightSource,
  type ModelFiles,
  type WeightSource,
} from './weights.ts';
