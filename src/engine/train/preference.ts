// Preference tuning (LLaMA-Factory stage dpo: pref_loss sigmoid / hinge / ipo / orpo / simpo),
// as LLaMA-Factory's CustomDPOTrainer (src/llamafactory/train/dpo/trainer.py) over TRL's
// DPOTrainer.dpo_loss defines it. A micro-batch holds P pairs as 2P rows, all chosen answers
// then all rejected ones (TRL concatenated_forward). Per micro-batch:
//   1. reference log-probs: the same model with the LoRA branches skipped (PEFT disable_adapter;
//      a Decoder without the LoRA set shares the weights, no second copy) — only for losses that
//      use a reference (sigmoid, hinge, ipo);
//   2. policy log-probs: a forward pass of the adapted model;
//   3. on the host (2 × 2P numbers, f64): the loss, its gradient w.r.t. each sequence's summed
//      log-prob, and the metrics TRL logs;
//   4. forward + backward of the policy where each label token's cross-entropy gradient is
//      weighted by −dL/dlogp of its sequence: d logp_seq/d logits_t = onehot − softmax.
// Dropout is off, as LLaMA-Factory's trainer disables it (trl disable_dropout_in_model), so the
// forward of step 2 and the one of step 4 are the same function.
import type { Recorder } from '../gpu/recorder.ts';
import { Recorder as GpuRecorder } from '../gpu/recorder.ts';
import type { Tensor } from '../gpu/tensor.ts';
import { createTensor, readBytes, releaseTensor, tensorSpec, writeTensor } from '../gpu/transfer.ts';
import { Decoder, type PassInputs } from '../model/decoder.ts';
import type { Model } from '../model/model.ts';
import { sequenceLogps } from '../ops/preference.ts';
import {
  pairLogps,
  PREF_LOSSES,
  preferenceLoss,
  rowWeights,
  usesReference,
  type PreferenceConfig,
  type PreferenceMetrics,
} from './preference-loss.ts';

export * from './preference-loss.ts';

export interface PreferenceMicroResult {
  loss: number;
  metrics: PreferenceMetrics;
}

/** The reference decoder and the small buffers of preference steps for one trainer. */
export class PreferenceObjective {
  private readonly reference: Decoder | null;
  private readonly scratch: Tensor;

  /** Log-prob readbacks of one training micro-batch (policy, and the reference when used). */
  get readbacksPerMicroBatch(): number {
    return this.reference ? 2 : 1;
  }

  constructor(
    readonly model: Model,
    readonly cfg: PreferenceConfig,
    lossChunkRows?: number,
  ) {
    if (!PREF_LOSSES.includes(cfg.loss)) throw new Error(`pref_loss must be one of ${PREF_LOSSES.join(', ')}`);
    if (!(cfg.beta > 0)) throw new Error(`pref_beta must be > 0, got ${cfg.beta}`);
    // The base model without adapters: the Decoder built without a LoRA set reads the same weights.
    this.reference = usesReference(cfg.loss) ? new Decoder(model, null, { lossChunkRows }) : null;
    this.scratch = createTensor(model.gpu, tensorSpec('f32', [4], 'scratch', 'preference.loss_sink'));
  }

  /** [Σ logp, count] of every sequence of the batch under `decoder` (one forward, no gradients). */
  private async logps(decoder: Decoder, inputs: PassInputs): Promise<Float32Array> {
    const gpu = this.model.gpu;
    const { B, T, N } = inputs.hb;
    const rowLoss = createTensor(gpu, tensorSpec('f32', [N], 'scratch', 'preference.row_nll'));
    const out = createTensor(gpu, tensorSpec('f32', [2 * B], 'scratch', 'preference.sequence_logps'));
    try {
      await decoder.forwardLoss(inputs, { lossScale: 0, accum: this.scratch, accumIndex: 0 }, { rowLoss });
      const rec: Recorder = new GpuRecorder(gpu, 'preference logps');
      await sequenceLogps(rec, { rowLoss, labels: inputs.labels, out, sequences: B, seqLen: T });
      await rec.submit();
      return new Float32Array(await readBytes(gpu, out.buf.buffer, 0, 8 * B, 'preference logps'));
    } finally {
      releaseTensor(gpu, rowLoss);
      releaseTensor(gpu, out);
    }
  }

  /** Loss and metrics of a micro-batch without gradients (evaluation). */
  async evaluate(policy: Decoder, inputs: PassInputs, pairs: number): Promise<PreferenceMicroResult> {
    const pol = await this.logps(policy, inputs);
    const ref = this.reference ? await this.logps(this.reference, inputs) : null;
    const r = preferenceLoss(this.cfg, pairLogps(pol, ref, pairs));
    return { loss: r.loss, metrics: r.metrics };
  }

  /**
   * One micro-batch of an accumulation window of `windowSize` micro-batches: gradients are added
   * to `policy.grads` with the window's 1/windowSize (the HF Trainer divides each micro-batch loss
   * by the accumulation steps).
   */
  async train(policy: Decoder, inputs: PassInputs, pairs: number, windowSize: number): Promise<PreferenceMicroResult> {
    const gpu = this.model.gpu;
    const ref = this.reference ? await this.logps(this.reference, inputs) : null;
    const pol = await this.logps(policy, inputs);
    const r = preferenceLoss(this.cfg, pairLogps(pol, ref, pairs));
    const w = rowWeights(inputs.hb, r.gradChosen, r.gradRejected, 1 / windowSize);
    const weights = createTensor(gpu, tensorSpec('f32', [w.length], 'scratch', 'preference.row_weights'));
    try {
      writeTensor(gpu, weights, w);
      await policy.trainMicroBatch(inputs, {
        lossScale: { buffer: weights, index: 0, perRow: true },
        accum: this.scratch,
        accumIndex: 1,
      });
    } finally {
      releaseTensor(gpu, weights);
    }
    return { loss: r.loss, metrics: r.metrics };
  }

  release(): void {
    this.reference?.release();
    releaseTensor(this.model.gpu, this.scratch);
  }
}
