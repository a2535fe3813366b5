// The check an adapter gets before it is opened on a model (no GPU): PEFT's shapes (lora_A
// [r, in], lora_B [out, r]), target_modules covering every adapted module, layers that exist;
// each refusal names the tensor or the config field.
import { describe, expect, it } from 'vitest';
import { checkPeftAdapter } from '../../src/engine/export/peft.ts';
import { parseModelConfig } from '../../src/engine/model/config.ts';
import { bytesSource } from '../../src/io/byte-source.ts';
import { SafetensorsFile } from '../../src/io/safetensors.ts';
import { SingleFileStore } from '../../src/io/safetensors-index.ts';
import { serializeSafetensors } from '../../src/io/safetensors-writer.ts';

// hidden 32, 4 heads / 2 KV heads of 8: q_proj [32, 32], v_proj [16, 32], down_proj [32, 64].
const model = parseModelConfig(
  JSON.stringify({
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: 32,
    intermediate_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 100,
    max_position_embeddings: 64,
    rms_norm_eps: 1e-6,
    tie_word_embeddings: true,
  }),
);

const config = (o: Record<string, unknown> = {}) =>
  JSON.stringify({ peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj', 'v_proj'], ...o });

async function store(tensors: Record<string, number[]>) {
  const bytes = await serializeSafetensors(
    Object.entries(tensors).map(([name, shape]) => ({
      name,
      dtype: 'F32' as const,
      shape,
      data: new Uint8Array(4 * shape.reduce((a, b) => a * b, 1)),
    })),
  );
  return new SingleFileStore(await SafetensorsFile.open(bytesSource(bytes, 'adapter_model.safetensors')));
}

const key = (l: number, m: string, w: 'A' | 'B') =>
  `base_model.model.model.layers.${l}.${m === 'down_proj' ? 'mlp' : 'self_attn'}.${m}.lora_${w}.weight`;
const fitting = () => ({
  [key(0, 'q_proj', 'A')]: [4, 32],
  [key(0, 'q_proj', 'B')]: [32, 4],
  [key(1, 'v_proj', 'A')]: [4, 32],
  [key(1, 'v_proj', 'B')]: [16, 4],
});

describe('checkPeftAdapter', () => {
  it('accepts an adapter that fits and says what it adapts', async () => {
    const c = checkPeftAdapter(model, config(), await store(fitting()));
    expect(c.targets.sort()).toEqual(['q_proj', 'v_proj']);
    expect(c.layers).toEqual([0, 1]);
    expect(c.modules.find((m) => m.module === 'v_proj')).toMatchObject({ shapeA: [4, 32], shapeB: [16, 4] });
  });

  it('a base with other shapes: names the tensor, its shape and the expected one', async () => {
    const t = { ...fitting(), [key(1, 'v_proj', 'B')]: [24, 4] };
    const s = await store(t);
    expect(() => checkPeftAdapter(model, config(), s)).toThrow(
      'adapter_model.safetensors: base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight: shape [24, 4] does not fit this model (expected [16, 4] for r=4)',
    );
  });

  it('a rank that disagrees with adapter_config.json r: names lora_A', async () => {
    const s = await store(fitting());
    expect(() => checkPeftAdapter(model, config({ r: 8 }), s)).toThrow(
      /layers\.0\.self_attn\.q_proj\.lora_A\.weight: shape \[4, 32\] does not fit this model \(expected \[8, 32\] for r=8\)/,
    );
  });

  it('weights for a module target_modules does not list', async () => {
    const s = await store(fitting());
    expect(() =>
      checkPeftAdapter(model, config({ target_modules: ['q_proj'] }), s, 'my-lora/adapter_config.json'),
    ).toThrow(
      'my-lora/adapter_config.json: target_modules: does not cover model.layers.1.self_attn.v_proj, which the weights file adapts',
    );
  });

  it('a layer the model does not have, and a lone lora_A', async () => {
    const deep = await store({ ...fitting(), [key(5, 'q_proj', 'A')]: [4, 32], [key(5, 'q_proj', 'B')]: [32, 4] });
    expect(() => checkPeftAdapter(model, config(), deep)).toThrow(
      /layers\.5\.self_attn\.q_proj\.lora_A\.weight: layer 5 does not exist \(the model has 2\)/,
    );
    const lone = await store({ [key(0, 'down_proj', 'A')]: [4, 64] });
    expect(() => checkPeftAdapter(model, config({ target_modules: ['down_proj'] }), lone)).toThrow(
      /model\.layers\.0\.mlp\.down_proj: has lora_A but not lora_B/,
    );
  });
});
