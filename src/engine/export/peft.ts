// PEFT adapter files: adapter_config.json + adapter_model.safetensors with PEFT's key names
// (base_model.model.<module>.lora_A.weight / lora_B.weight, f32), as peft save_pretrained writes
// them (src/peft/utils/save_and_load.py) and LLaMA-Factory leaves them in output_dir. Also the
// reverse: a PEFT adapter folder → a LoraSet on the GPU (chat / export with adapter_name_or_path).
import { readF32, writeTensor } from '../gpu/transfer.ts';
import { LoraSet, modulePrefix, peftBaseOf, type LoraConfig, type Model } from '../model/model.ts';
import {
  ALL_LINEAR_MODULES,
  linearModules,
  linearShape,
  type LinearModule,
  type ModelConfig,
} from '../model/config.ts';
import {
  isTargeted,
  loraKey,
  makeAdapterConfig,
  parseAdapterConfig,
  parseLoraKey,
  PeftError,
  writeAdapterConfig,
  type LoraAdapterConfig,
} from '../../io/peft.ts';
import { serializeSafetensors, type TensorToWrite } from '../../io/safetensors-writer.ts';
import type { TensorStore } from '../../io/safetensors-index.ts';
import { convertBytes } from './convert.ts';
import type { ExportWrite } from './merged.ts';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';

/** adapter_config.json fields for a trained LoraSet. */
export function adapterConfigFor(
  lora: LoraSet,
  loraCfg: LoraConfig = lora.config,
  baseModelName: string | null = null,
): LoraAdapterConfig {
  const c = makeAdapterConfig({
    r: loraCfg.rank,
    loraAlpha: loraCfg.alpha,
    loraDropout: loraCfg.dropout,
    targetModules: [...lora.targets],
    useRslora: loraCfg.rsLora ?? false,
    baseModelNameOrPath: baseModelName,
  });
  if (loraCfg.layers) c.layersToTransform = [...loraCfg.layers];
  // A Gemma3ForConditionalGeneration base: the names alone would also match the vision tower's
  // q_proj / k_proj / v_proj (SigLIP), so target_modules is a regex (PEFT full-matches a string
  // against each module name) over the language model's layers only.
  if (lora.peftBase !== 'model')
    c.targetModules = `${lora.peftBase.replace(/\./g, '\\.')}\\.layers\\.\\d+\\.(?:self_attn|mlp)\\.(?:${[...lora.targets].sort().join('|')})`;
  return c;
}

/** The adapter's tensors (read back from the GPU) under PEFT key names, in layer/module order. */
export async function adapterTensors(lora: LoraSet): Promise<TensorToWrite[]> {
  const states = [...lora.adapters.values()].sort(
    (a, b) => a.layer - b.layer || ALL_LINEAR_MODULES.indexOf(a.module) - ALL_LINEAR_MODULES.indexOf(b.module),
  );
  const out: TensorToWrite[] = [];
  for (const s of states) {
    for (const which of ['A', 'B'] as const) {
      const t = which === 'A' ? s.A : s.B;
      const host = await readF32(lora.gpu, t);
      out.push({
        name: loraKey(s.layer, s.module, which, lora.peftBase),
        dtype: 'F32',
        shape: [...t.shape],
        data: new Uint8Array(host.buffer, host.byteOffset, host.byteLength),
      });
    }
  }
  return out;
}

/** Writes adapter_config.json and adapter_model.safetensors; returns the file names. */
export async function exportPeft(
  lora: LoraSet,
  loraCfg: LoraConfig | null,
  baseModelName: string | null,
  write: ExportWrite,
): Promise<string[]> {
  const cfg = adapterConfigFor(lora, loraCfg ?? lora.config, baseModelName);
  const bytes = await serializeSafetensors(await adapterTensors(lora), { format: 'pt' });
  await write(ADAPTER_WEIGHTS, bytes);
  await write(ADAPTER_CONFIG, new TextEncoder().encode(writeAdapterConfig(cfg)));
  return [ADAPTER_WEIGHTS, ADAPTER_CONFIG];
}

/** One adapted module of a checked adapter: its tensor keys and the shapes the model needs. */
export interface CheckedModule {
  name: string;
  layer: number;
  module: LinearModule;
  A: string;
  B: string;
  /** [r, in_features] and [out_features, r]. */
  shapeA: [number, number];
  shapeB: [number, number];
}

export interface CheckedAdapter {
  config: LoraAdapterConfig;
  modules: CheckedModule[];
  /** Module names (q_proj, …) and layers the adapter adapts. */
  targets: LinearModule[];
  layers: number[];
}

/**
 * Checks a PEFT adapter against a model's config without touching the GPU: every tensor key is a
 * LoRA weight of a module the model has and target_modules covers, and every shape is what the
 * module's in/out features and the adapter's r make it (PEFT LoraLayer.update_layer: lora_A is
 * [r, in_features], lora_B is [out_features, r]). Errors name the file and the tensor.
 */
export function checkPeftAdapter(
  c: ModelConfig,
  configText: string,
  store: Pick<TensorStore, 'names' | 'info'>,
  file = ADAPTER_CONFIG,
): CheckedAdapter {
  const ac = parseAdapterConfig(configText, file);
  if (Object.keys(ac.rankPattern).length || Object.keys(ac.alphaPattern).length)
    throw new PeftError(file, 'rank_pattern', 'per-module ranks/alphas are not supported');
  if (ac.useDora) throw new PeftError(file, 'use_dora', 'DoRA adapters are not supported');
  const found = new Map<string, { A?: string; B?: string; layer: number; module: LinearModule }>();
  for (const key of store.names()) {
    const k = parseLoraKey(key);
    if (!k)
      throw new PeftError(
        ADAPTER_WEIGHTS,
        key,
        'not a LoRA weight of a q/k/v/o/gate/up/down projection (modules_to_save and embeddings are not supported)',
      );
    if (!linearModules(c).includes(k.module))
      throw new PeftError(
        ADAPTER_WEIGHTS,
        key,
        `${k.module} is not a linear layer of ${c.architecture} (it has ${linearModules(c).join(', ')}): the adapter was trained on another model family`,
      );
    if (k.which === 'magnitude') throw new PeftError(ADAPTER_WEIGHTS, key, 'DoRA magnitude vectors are not supported');
    if (k.layer >= c.numLayers)
      throw new PeftError(ADAPTER_WEIGHTS, key, `layer ${k.layer} does not exist (the model has ${c.numLayers})`);
    const name = modulePrefix(k.layer, k.module);
    const e = found.get(name) ?? { layer: k.layer, module: k.module };
    e[k.which] = key;
    found.set(name, e);
  }
  if (!found.size) throw new PeftError(ADAPTER_WEIGHTS, null, 'holds no LoRA weights');
  const modules: CheckedModule[] = [];
  for (const [name, e] of found) {
    if (!e.A || !e.B)
      throw new PeftError(ADAPTER_WEIGHTS, name, `has lora_${e.A ? 'A' : 'B'} but not lora_${e.A ? 'B' : 'A'}`);
    if (!isTargeted(ac, e.layer, e.module, peftBaseOf(c)))
      throw new PeftError(file, 'target_modules', `does not cover ${name}, which the weights file adapts`);
    const [outF, inF] = linearShape(c, e.module);
    const check = (key: string, shape: [number, number]) => {
      const info = store.info(key);
      if (info.dtype !== 'F32' && info.dtype !== 'BF16' && info.dtype !== 'F16')
        throw new PeftError(info.shard, key, `dtype ${info.dtype} is not a float type`);
      if (info.shape.length !== 2 || info.shape[0] !== shape[0] || info.shape[1] !== shape[1]) {
        throw new PeftError(
          info.shard,
          key,
          `shape [${info.shape.join(', ')}] does not fit this model (expected [${shape.join(', ')}] for r=${ac.r})`,
        );
      }
    };
    const shapeA: [number, number] = [ac.r, inF];
    const shapeB: [number, number] = [outF, ac.r];
    check(e.A, shapeA);
    check(e.B, shapeB);
    modules.push({ name, layer: e.layer, module: e.module, A: e.A, B: e.B, shapeA, shapeB });
  }
  return {
    config: ac,
    modules,
    targets: [...new Set(modules.map((m) => m.module))],
    layers: [...new Set(modules.map((m) => m.layer))].sort((a, b) => a - b),
  };
}

/**
 * Uploads a PEFT LoRA adapter onto `model` as a LoraSet. Refuses what one LoraSet cannot express
 * faithfully (per-module rank/alpha patterns, DoRA) and adapters that do not fit the model.
 */
export async function loadPeftAdapter(
  model: Model,
  configText: string,
  store: TensorStore,
  file = ADAPTER_CONFIG,
  /** Training settings for continuing to train it (dropout defaults to the adapter's lora_dropout). */
  overrides: { dropout?: number; seed?: number } = {},
): Promise<{ lora: LoraSet; config: LoraAdapterConfig }> {
  const c = model.config;
  const { config: ac, modules, targets, layers } = checkPeftAdapter(c, configText, store, file);
  const loraCfg: LoraConfig = {
    rank: ac.r,
    alpha: ac.loraAlpha,
    dropout: overrides.dropout ?? ac.loraDropout,
    targets,
    rsLora: ac.useRslora,
    seed: overrides.seed ?? 0,
    ...(layers.length < c.numLayers ? { layers } : {}),
  };
  const linears = linearModules(c);
  const lora = new LoraSet(model.gpu, loraCfg, linears);
  lora.peftBase = peftBaseOf(c);
  try {
    lora.allocate(
      modules.map((m) => ({
        name: m.name,
        layer: m.layer,
        module: m.module,
        moduleId: m.layer * linears.length + linears.indexOf(m.module),
        inFeatures: m.shapeA[1],
        outFeatures: m.shapeB[0],
      })),
    );
    const read = async (key: string) => {
      const info = store.info(key);
      const raw = await store.readTensor(key);
      const from = info.dtype === 'F32' ? 'f32' : info.dtype === 'BF16' ? 'bf16' : 'f16';
      const bytes = convertBytes(raw.bytes, from, 'f32');
      const f = new Float32Array(bytes.byteLength / 4);
      new Uint8Array(f.buffer).set(bytes);
      return f;
    };
    for (const m of modules) {
      const st = lora.adapters.get(m.name)!;
      writeTensor(model.gpu, st.A, await read(m.A));
      writeTensor(model.gpu, st.B, await read(m.B));
    }
  } catch (err) {
    lora.release();
    throw err;
  }
  return { lora, config: ac };
}
