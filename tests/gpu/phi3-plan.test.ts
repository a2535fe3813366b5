// planMemory for Phi-3 (fused qkv_proj / gate_up_proj, one LoRA per fused module) against the
// memory ledger's measured peak of two training steps of a tiny Phi-3.
import { describe, it } from 'vitest';
import { parseModelConfig } from '../../src/engine/model/config.ts';
import { loadModel } from '../../src/engine/model/load.ts';
import { testGpu } from './context.ts';
import { randomWeightSource } from './engine-util.ts';
import { expectPlanMatchesPeak, PLAN_RUN, twoStepPeak } from './plan-util.ts';

const RAW = {
  architectures: ['Phi3ForCausalLM'],
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 64,
  max_position_embeddings: 64,
  original_max_position_embeddings: 16,
  partial_rotary_factor: 0.75,
  rope_scaling: { type: 'longrope', short_factor: [1.0, 1.2, 1.5], long_factor: [1.5, 3.0, 6.0] },
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: true,
  torch_dtype: 'float32',
  eos_token_id: 63,
};

describe('planMemory for Phi-3', () => {
  for (const [method, ckpt] of [
    ['lora', false],
    ['lora', true],
    ['qlora', true],
  ] as const) {
    it(`two training steps of a tiny Phi-3 (${method}, checkpointing ${ckpt ? 'on' : 'off'}): predicted peak within 5 %`, async () => {
      const { planMemory } = await import('../../src/engine/plan/plan.ts');
      const gpu = await testGpu();
      gpu.pool.trim();
      const c = parseModelConfig(RAW);
      const model = await loadModel(gpu, c, randomWeightSource(c, 'tiny-phi3'), {
        ...(method === 'qlora' ? { quantize: 'nf4', doubleQuant: true } : {}),
      });
      try {
        const peak = await twoStepPeak(model, { gradientCheckpointing: ckpt });
        const plan = planMemory(model.config, {
          method,
          doubleQuant: true,
          ...PLAN_RUN,
          gradientCheckpointing: ckpt,
          storageOffsetAlignment: gpu.limits.minStorageBufferOffsetAlignment,
        });
        const { measured } = expectPlanMatchesPeak(plan, peak);
        console.log(
          `[tiny Phi-3 ${method}, checkpointing ${ckpt}] planned ${plan.total} B, measured ${measured} B (rel ${(Math.abs(plan.total - measured) / measured).toExponential(1)})`,
        );
      } finally {
        model.release();
      }
    });
  }
});
