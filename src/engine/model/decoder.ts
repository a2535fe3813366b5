// The Llama / Qwen2 / Qwen3 / Mistral decoder stack, forward and backward, composed from the ops
// (transformers modeling_llama.py / modeling_qwen2.py / modeling_qwen3.py):
//   h = embed(ids)                       (+ NEFTune noise when training)
//   per layer: h += o_proj(attn(rope(q(norm1 h)), rope(k(..)), v(..)))
//              h += down(silu(gate(norm2 h)) · up(norm2 h))
//   logits = lm_head(norm(h)), loss = Σ CE(shifted labels) · (1/count in the accumulation window)
// LoRA is added to any linear layer; q/k/v biases (Qwen2) via a rank-1 matmul with a ones
// column; Qwen3 q/k RMSNorm over head_dim before RoPE; Gemma's (1 + w) norms, GeGLU, normed
// sublayer outputs, per-layer windows and RoPE tables, soft-capping (modeling_gemma3.py,
// modeling_gemma2.py; see README.md). Gradient checkpointing keeps only each
// layer's input and recomputes the layer in the backward; with checkpointPrecision 'bf16' those
// inputs are kept as bf16 (half the bytes) and the forward itself continues from the rounded
// value, so the recomputed layer sees exactly what the forward saw and the gradients stay those of
// the computed loss (the residual stream is rounded to bf16 at each layer boundary, as it is in a
// bf16 PyTorch run; all math stays f32).
import type { Gpu } from '../gpu/device.ts';
import { Recorder } from '../gpu/recorder.ts';
import { tensorView, type Tensor } from '../gpu/tensor.ts';
import { createTensor, releaseTensor, tensorSpec, uploadTensor, zerosTensor } from '../gpu/transfer.ts';
import type { MemoryCategory } from '../gpu/ledger.ts';
import {
  attentionBackward,
  attentionForward,
  createAttentionScratch,
  releaseAttentionScratch,
  type AttentionScratch,
} from '../ops/attention.ts';
import { crossEntropy, type LossScale } from '../ops/cross_entropy.ts';
import { embeddingBackward, embeddingCsr, embeddingForward, type NeftuneOptions } from '../ops/embedding.ts';
import {
  createLoraWorkspace,
  loraBackward,
  loraBackwardParts,
  loraForward,
  loraForwardParts,
  releaseLoraWorkspace,
  type LoraDropout,
  type LoraWorkspace,
} from '../ops/lora.ts';
import { matmul } from '../ops/matmul.ts';
import { MATVEC_MAX_ROWS, matvec } from '../ops/matvec.ts';
import type { Nf4Weight } from '../ops/nf4.ts';
import { packBf16, unpackBf16 } from '../ops/pack16.ts';
import { rmsnormBackward, rmsnormForward, rmsnormWeightGradPartials } from '../ops/rmsnorm.ts';
import { softcapForward } from '../ops/softcap.ts';
import { ropeBackward, ropeForward } from '../ops/rope.ts';
import { swigluBackward, swigluForward } from '../ops/swiglu.ts';
import { embeddingScale, layerWindow, mlpActivation, normOffset } from './config.ts';
import { labelRuns, type HostBatch } from './batch.ts';
import {
  computeInvFreq,
  fusedParts,
  linearModules,
  linearShape,
  longRopeUsesLong,
  ropeAttentionScaling,
  type LinearModule,
  type ModelConfig,
} from './config.ts';
import {
  gatherHostRows,
  isHostWeight,
  isRowSplit,
  modulePrefix,
  type LoraModuleState,
  type LoraSet,
  type Model,
  type RowSplitWeight,
} from './model.ts';

/** Bytes of one logits chunk [rows, vocab] f32 (the loss never holds all rows' logits at once). */
export const LOGITS_CHUNK_BYTES = 64 << 20;

export interface DecoderOptions {
  /** Recompute each layer in the backward instead of keeping its activations. */
  checkpointing?: boolean;
  /** With checkpointing: storage of the kept layer inputs (default f32); see the header. */
  checkpointPrecision?: CheckpointPrecision;
  /** Train every base weight (full fine-tuning; weights must be f32 and not split). */
  full?: boolean;
  /** Rows per logits chunk (default: as many as fit in 64 MiB). */
  lossChunkRows?: number;
  /** Forward only (generation): no gradient buffers. */
  inference?: boolean;
}

export type CheckpointPrecision = 'f32' | 'bf16';

/** Per-layer activations (what the backward reads). */
interface LayerActs {
  xn1: Tensor;
  rstd1: Tensor;
  qPre?: Tensor;
  kPre?: Tensor;
  rstdQ?: Tensor;
  rstdK?: Tensor;
  /** Gemma: o_proj's and down_proj's outputs and the rstd of their norms (post_attention / post_feedforward). */
  attnOut?: Tensor;
  rstdAttnOut?: Tensor;
  mlpOut?: Tensor;
  rstdMlpOut?: Tensor;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  o: Tensor;
  lse: Tensor;
  hMid: Tensor;
  xn2: Tensor;
  rstd2: Tensor;
  gate: Tensor;
  up: Tensor;
  act: Tensor;
  lora: Map<LinearModule, LoraWorkspace>;
}

/** What one recorded pass needs besides the model. */
export interface PassInputs {
  hb: HostBatch;
  ids: Tensor;
  positions: Tensor;
  /** RoPE inverse frequencies for this pass: the model's, or (dynamic NTK past the trained length) its own. */
  invFreq: Tensor;
  ownInvFreq: boolean;
  segments: Tensor;
  labels: Tensor;
  ones: Tensor | null;
  /** Micro-step counter picking the dropout masks (same in forward, recompute and backward); null = no dropout (eval). */
  dropoutStep: number | null;
  neftune?: NeftuneOptions;
  /** Generation: attend over a KV cache holding `offset` earlier tokens (B = 1, no segments). */
  kv?: { k: Tensor[]; v: Tensor[]; offset: number };
  /** Batched generation: token row n continues its own sequence, cached in kvRows[n] (instead of kv). */
  kvRows?: { k: Tensor[]; v: Tensor[]; offset: number }[];
}

export interface LossTarget {
  /** 1/(labels in the accumulation window), read on the GPU. */
  lossScale: LossScale;
  /** Receives Σ scaled token losses at index (accumulated). */
  accum: Tensor;
  accumIndex: number;
}

/** Trainable gradient tensors, by parameter name. */
export type GradMap = Map<string, Tensor>;

export class Decoder {
  readonly gpu: Gpu;
  /** Gradient tensor per trainable tensor: LoRA "…lora_A"/"…lora_B", or the HF weight name (full). */
  readonly grads: GradMap = new Map();
  /** LoRA runs: the one buffer every LoRA gradient is a view of (laid out as LoraSet.arena). */
  gradArena: Tensor | null = null;
  private readonly c: ModelConfig;
  private disposed = false;

  constructor(
    readonly model: Model,
    readonly lora: LoraSet | null,
    readonly opts: DecoderOptions = {},
  ) {
    this.gpu = model.gpu;
    this.c = model.config;
    if (opts.inference) return;
    if (opts.full) {
      for (const [name, w] of model.weights) {
        if (name === 'lm_head.weight' && w === model.weights.get('model.embed_tokens.weight')) continue;
        if (isRowSplit(w) || isHostWeight(w) || (w as Nf4Weight).kind === 'nf4' || (w as Tensor).dtype !== 'f32') {
          throw new Error(
            `full fine-tuning needs f32 weights in single buffers; ${name} is not (load with computeDType 'f32')`,
          );
        }
        this.grads.set(name, this.zeros([...(w as Tensor).shape], `grad ${name}`, 'gradients'));
      }
    }
    if (lora?.arena) {
      // The gradients mirror the adapters' arena (same offsets), so clipping and AdamW read them in place.
      const arena = zerosTensor(this.gpu, tensorSpec('f32', [...lora.arena.shape], 'gradients', 'grad lora.arena'));
      this.gradArena = arena;
      const at = (t: Tensor) => t.offset! - (lora.arena!.offset ?? 0);
      for (const [name, st] of lora.adapters) {
        this.grads.set(`${name}.lora_A`, tensorView(arena, at(st.A), 'f32', st.A.shape, `grad ${name}.lora_A`));
        this.grads.set(`${name}.lora_B`, tensorView(arena, at(st.B), 'f32', st.B.shape, `grad ${name}.lora_B`));
      }
    }
  }

  private zeros(shape: number[], label: string, cat: MemoryCategory): Tensor {
    return createTensor(this.gpu, tensorSpec('f32', shape, cat, label));
  }

  /** Records zeroing of every gradient (start of an accumulation window). */
  clearGrads(rec: Recorder): void {
    if (this.gradArena) rec.clear(this.gradArena);
    for (const g of this.grads.values()) if (g.offset === undefined) rec.clear(g);
  }

  release(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const g of this.grads.values()) if (g.offset === undefined) releaseTensor(this.gpu, g);
    if (this.gradArena) releaseTensor(this.gpu, this.gradArena);
    this.gradArena = null;
    this.grads.clear();
  }

  // -------------------------------------------------------------------------------------------
  // Inputs

  uploadInputs(hb: HostBatch, dropoutStep: number | null, neftune?: NeftuneOptions): PassInputs {
    const g = this.gpu;
    const up = (a: Int32Array, label: string) => uploadTensor(g, a, tensorSpec('i32', [hb.N], 'activations', label));
    const needOnes = this.c.qkvBias || this.c.oBias || this.c.mlpBias;
    const passInvFreq = this.passInvFreq(hb.positions);
    return {
      hb,
      ids: up(hb.ids, 'input_ids'),
      positions: up(hb.positions, 'position_ids'),
      invFreq: passInvFreq ?? this.model.invFreq!,
      ownInvFreq: passInvFreq !== null,
      segments: up(hb.segments, 'segment_ids'),
      labels: up(hb.shifted, 'labels'),
      ones: needOnes
        ? uploadTensor(g, new Float32Array(hb.N).fill(1), tensorSpec('f32', [hb.N, 1], 'activations', 'ones'))
        : null,
      dropoutStep,
      neftune,
    };
  }

  releaseInputs(p: PassInputs): void {
    for (const t of [p.ids, p.positions, p.segments, p.labels, p.ones, p.ownInvFreq ? p.invFreq : null])
      if (t) releaseTensor(this.gpu, t);
  }

  /**
   * Dynamic NTK scaling rescales the RoPE base once a pass reaches past max_position_embeddings
   * (transformers' dynamic_rope_update, with seq_len = largest position + 1); below it the
   * model's own table applies. Null when the model's table is the right one.
   */
  private passInvFreq(positions: Int32Array): Tensor | null {
    const rope = this.c.rope;
    if (rope.type !== 'dynamic' && rope.type !== 'longrope') return null;
    let maxPos = 0;
    for (const p of positions) if (p > maxPos) maxPos = p;
    // LongRoPE: the model's table holds the short factors; a pass reaching past
    // original_max_position_embeddings takes the long ones (see longRopeUsesLong).
    if (rope.type === 'longrope' ? !longRopeUsesLong(rope, maxPos + 1) : maxPos + 1 <= this.c.maxPositionEmbeddings)
      return null;
    return uploadTensor(
      this.gpu,
      computeInvFreq(this.c, maxPos + 1),
      tensorSpec('f32', [this.c.rotaryDim / 2], 'activations', `rope.inv_freq.${rope.type}`),
    );
  }

  // -------------------------------------------------------------------------------------------
  // Buffers

  private allocActs(N: number, cat: MemoryCategory, tag: string): LayerActs {
    const c = this.c;
    const H = c.hiddenSize;
    const QD = c.numHeads * c.headDim;
    const KD = c.numKvHeads * c.headDim;
    const I = c.intermediateSize;
    const t = (shape: number[], name: string) => this.zeros(shape, `${tag}.${name}`, cat);
    const acts: LayerActs = {
      xn1: t([N, H], 'xn1'),
      rstd1: t([N], 'rstd1'),
      q: t([N, QD], 'q'),
      k: t([N, KD], 'k'),
      v: t([N, KD], 'v'),
      o: t([N, QD], 'attn_out'),
      lse: t([c.numHeads, N], 'lse'),
      hMid: t([N, H], 'h_mid'),
      xn2: t([N, H], 'xn2'),
      rstd2: t([N], 'rstd2'),
      gate: t([N, I], 'gate'),
      up: t([N, I], 'up'),
      act: t([N, I], 'act'),
      lora: new Map(),
    };
    if (c.gemma) {
      acts.attnOut = t([N, H], 'attn_o_proj');
      acts.rstdAttnOut = t([N], 'rstd_post_attn');
      acts.mlpOut = t([N, H], 'mlp_down_proj');
      acts.rstdMlpOut = t([N], 'rstd_post_ff');
    }
    if (c.qkNorm) {
      acts.qPre = t([N, QD], 'q_pre');
      acts.kPre = t([N, KD], 'k_pre');
      acts.rstdQ = t([N * c.numHeads], 'rstd_q');
      acts.rstdK = t([N * c.numKvHeads], 'rstd_k');
    }
    return acts;
  }

  private allocLoraWs(acts: LayerActs, layer: number, N: number): void {
    if (!this.lora) return;
    for (const m of linearModules(this.c)) {
      const st = this.lora.get(layer, m);
      if (st && !acts.lora.has(m))
        acts.lora.set(m, createLoraWorkspace(this.gpu, N, st.adapter, `${modulePrefix(layer, m)}.lora_ws`));
    }
  }

  private releaseActs(acts: LayerActs): void {
    for (const [k, v] of Object.entries(acts)) {
      if (k === 'lora') continue;
      if (v) releaseTensor(this.gpu, v as Tensor);
    }
    for (const ws of acts.lora.values()) releaseLoraWorkspace(this.gpu, ws);
  }

  // -------------------------------------------------------------------------------------------
  // Linear layers

  private dropout(st: LoraModuleState, step: number | null): LoraDropout | undefined {
    const p = this.lora?.config.dropout ?? 0;
    return p > 0 && step !== null ? { p, seed: this.lora!.config.seed, step, moduleId: st.moduleId } : undefined;
  }

  /** y (= or +=) x·Wᵀ + b + LoRA. */
  private async linearForward(
    rec: Recorder,
    p: PassInputs,
    layer: number,
    m: LinearModule,
    x: Tensor,
    y: Tensor,
    acts: LayerActs,
    beta = 0,
  ): Promise<void> {
    if (this.decodeStep(p.hb.N)) return this.linearDecode(rec, p, layer, m, x, y, acts, beta);
    const [out, inF] = linearShape(this.c, m);
    const N = p.hb.N;
    await matmul(rec, { a: x, b: this.model.linear(layer, m), c: y, M: N, N: out, K: inF, transB: true, beta });
    const bias = this.model.bias(layer, m);
    if (bias) await matmul(rec, { a: p.ones!, b: bias, c: y, M: N, N: out, K: 1, beta: 1 });
    const st = this.lora?.get(layer, m);
    if (st)
      await loraForward(rec, {
        x,
        y,
        adapter: st.adapter,
        N,
        dropout: this.dropout(st, p.dropoutStep),
        ws: acts.lora.get(m)!,
      });
  }

  /**
   * Generation steps of a few tokens (KV-cache decode) run their products as matrix-vector
   * kernels (ops/matvec.ts); training, evaluation and long prefills keep the tiled matmul.
   */
  private decodeStep(rows: number): boolean {
    return !!this.opts.inference && rows <= MATVEC_MAX_ROWS;
  }

  /** linearForward of a decode step: base, bias and LoRA as matrix-vector products. */
  private async linearDecode(
    rec: Recorder,
    p: PassInputs,
    layer: number,
    m: LinearModule,
    x: Tensor,
    y: Tensor,
    acts: LayerActs,
    beta: number,
  ): Promise<void> {
    const [out, inF] = linearShape(this.c, m);
    const rows = p.hb.N;
    await matvec(rec, { x, w: this.model.linear(layer, m), y, rows, N: out, K: inF, beta });
    const bias = this.model.bias(layer, m);
    // The bias as an [out, 1] weight applied to a column of ones.
    if (bias) await matvec(rec, { x: p.ones!, w: bias, y, rows, N: out, K: 1, beta: 1 });
    const st = this.lora?.get(layer, m);
    if (!st) return;
    // PEFT's y += s·(x·Aᵀ)·Bᵀ (no dropout when generating): A [r, in] and B [out, r] are nn.Linear-shaped.
    const { a, b, r, scale } = st.adapter;
    const t = acts.lora.get(m)!.t;
    await matvec(rec, { x, w: a, y: t, rows, N: r, K: inF });
    await matvec(rec, { x: t, w: b, y, rows, N: out, K: r, alpha: scale, beta: 1 });
  }

  /** dX (= or +=) dY·W (+ LoRA), and the trainable gradients (+=). */
  private async linearBackward(
    rec: Recorder,
    p: PassInputs,
    layer: number,
    m: LinearModule,
    x: Tensor,
    dY: Tensor,
    dX: Tensor | undefined,
    acts: LayerActs,
    accumulateDx: boolean,
  ): Promise<void> {
    const [out, inF] = linearShape(this.c, m);
    const N = p.hb.N;
    const name = modulePrefix(layer, m);
    if (dX)
      await matmul(rec, {
        a: dY,
        b: this.model.linear(layer, m),
        c: dX,
        M: N,
        N: inF,
        K: out,
        beta: accumulateDx ? 1 : 0,
      });
    const st = this.lora?.get(layer, m);
    if (st) {
      await loraBackward(rec, {
        x,
        dY,
        dX,
        dA: this.grads.get(`${name}.lora_A`)!,
        dB: this.grads.get(`${name}.lora_B`)!,
        accumulate: true,
        adapter: st.adapter,
        N,
        dropout: this.dropout(st, p.dropoutStep),
        ws: acts.lora.get(m)!,
      });
    }
    const dW = this.grads.get(`${name}.weight`);
    if (dW) await matmul(rec, { a: dY, b: x, c: dW, M: out, N: inF, K: N, transA: true, beta: 1 });
    const dBias = this.grads.get(`${name}.bias`);
    if (dBias) await matmul(rec, { a: p.ones!, b: dY, c: dBias, M: 1, N: out, K: N, transA: true, beta: 1 });
  }

  /**
   * A fused projection (Phi-3's qkv_proj → q, k, v; gate_up_proj → gate, up; fusedParts): each
   * part's base product reads its rows of the fused weight in place (an offset into W, dense or
   * NF4) and writes its own tensor, and a LoRA on the fused module adds s·t·B_partᵀ to each part
   * (loraForwardParts): the split costs no copy. Decode steps (matrix-vector kernels, no weight
   * offset) write the fused [rows, out] product once and copy each part's columns out (≤ 8 rows).
   */
  private async fusedForward(
    rec: Recorder,
    p: PassInputs,
    layer: number,
    m: 'qkv_proj' | 'gate_up_proj',
    x: Tensor,
    outs: readonly Tensor[],
    acts: LayerActs,
  ): Promise<void> {
    const parts = fusedParts(this.c, m);
    const [out, inF] = linearShape(this.c, m);
    const N = p.hb.N;
    if (this.decodeStep(N)) {
      const y = this.zeros([N, out], `${modulePrefix(layer, m)}.fused_out`, 'scratch');
      this.deferred.push(y);
      await this.linearDecode(rec, p, layer, m, x, y, acts, 0);
      for (let n = 0; n < N; n++)
        for (const [i, part] of parts.entries())
          rec.copy(y, (n * out + part.row0) * 4, outs[i], n * part.rows * 4, part.rows * 4);
      return;
    }
    const W = this.model.linear(layer, m);
    for (const [i, part] of parts.entries())
      await matmul(rec, { a: x, b: W, bOffset: part.row0 * inF, c: outs[i], M: N, N: part.rows, K: inF, transB: true });
    const st = this.lora?.get(layer, m);
    if (st)
      await loraForwardParts(rec, {
        x,
        adapter: st.adapter,
        N,
        dropout: this.dropout(st, p.dropoutStep),
        ws: acts.lora.get(m)!,
        parts: parts.map((part, i) => ({ t: outs[i], ...part })),
      });
  }

  /**
   * Backward of fusedForward: the parts' gradients are the fused dY split the same way, so
   * dX (=/+=) Σ_part dY_part·W_part, LoRA via loraBackwardParts, and with full fine-tuning each
   * part's rows of dW (+=) dY_partᵀ·x — the concatenation happens by offsets, never by a copy.
   */
  private async fusedBackward(
    rec: Recorder,
    p: PassInputs,
    layer: number,
    m: 'qkv_proj' | 'gate_up_proj',
    x: Tensor,
    dYs: readonly Tensor[],
    dX: Tensor | undefined,
    acts: LayerActs,
    accumulateDx: boolean,
  ): Promise<void> {
    const parts = fusedParts(this.c, m);
    const [, inF] = linearShape(this.c, m);
    const N = p.hb.N;
    const name = modulePrefix(layer, m);
    const W = this.model.linear(layer, m);
    if (dX)
      for (const [i, part] of parts.entries())
        await matmul(rec, {
          a: dYs[i],
          b: W,
          bOffset: part.row0 * inF,
          c: dX,
          M: N,
          N: inF,
          K: part.rows,
          beta: accumulateDx || i > 0 ? 1 : 0,
        });
    const st = this.lora?.get(layer, m);
    if (st)
      await loraBackwardParts(rec, {
        x,
        dX,
        dA: this.grads.get(`${name}.lora_A`)!,
        dB: this.grads.get(`${name}.lora_B`)!,
        accumulate: true,
        adapter: st.adapter,
        N,
        dropout: this.dropout(st, p.dropoutStep),
        ws: acts.lora.get(m)!,
        parts: parts.map((part, i) => ({ t: dYs[i], ...part })),
      });
    const dW = this.grads.get(`${name}.weight`);
    if (dW)
      for (const [i, part] of parts.entries())
        await matmul(rec, {
          a: dYs[i],
          b: x,
          c: dW,
          cOffset: part.row0 * inF,
          M: part.rows,
          N: inF,
          K: N,
          transA: true,
          beta: 1,
        });
  }

  // -------------------------------------------------------------------------------------------
  // One layer

  private async layerForward(
    rec: Recorder,
    p: PassInputs,
    l: number,
    hIn: Tensor,
    hOut: Tensor,
    a: LayerActs,
  ): Promise<void> {
    const c = this.c;
    const N = p.hb.N;
    const H = c.hiddenSize;
    const D = c.headDim;
    const pre = `model.layers.${l}`;
    const eps = c.rmsNormEps;
    await rmsnormForward(rec, {
      x: hIn,
      weight: this.model.tensor(`${pre}.input_layernorm.weight`),
      y: a.xn1,
      rstd: a.rstd1,
      rows: N,
      width: H,
      eps,
      offset: this.normOffset,
    });
    if (c.fusedProjections) await this.fusedForward(rec, p, l, 'qkv_proj', a.xn1, [a.q, a.k, a.v], a);
    else {
      await this.linearForward(rec, p, l, 'q_proj', a.xn1, a.qPre ?? a.q, a);
      await this.linearForward(rec, p, l, 'k_proj', a.xn1, a.kPre ?? a.k, a);
      await this.linearForward(rec, p, l, 'v_proj', a.xn1, a.v, a);
    }
    if (c.qkNorm) {
      await rmsnormForward(rec, {
        x: a.qPre!,
        weight: this.model.tensor(`${pre}.self_attn.q_norm.weight`),
        y: a.q,
        rstd: a.rstdQ!,
        rows: N * c.numHeads,
        width: D,
        eps,
        offset: this.normOffset,
      });
      await rmsnormForward(rec, {
        x: a.kPre!,
        weight: this.model.tensor(`${pre}.self_attn.k_norm.weight`),
        y: a.k,
        rstd: a.rstdK!,
        rows: N * c.numKvHeads,
        width: D,
        eps,
        offset: this.normOffset,
      });
    }
    // SmolLM3's NoPE layers attend without positions (modeling_smollm3.py: use_rope per layer).
    if (!c.noRopeLayers.includes(l)) await ropeForward(rec, { q: a.q, k: a.k, ...this.ropeShape(p, N, l) });
    if (p.kvRows) {
      await this.attendOwnCaches(rec, p.kvRows, l, a);
    } else if (p.kv) {
      const row = c.numKvHeads * D * 4;
      rec.copy(a.k, 0, p.kv.k[l], p.kv.offset * row, N * row);
      rec.copy(a.v, 0, p.kv.v[l], p.kv.offset * row, N * row);
      await attentionForward(rec, {
        ...this.attentionOptions(l),
        queries: N,
        keys: p.kv.offset + N,
        queryOffset: p.kv.offset,
        qHeads: c.numHeads,
        kvHeads: c.numKvHeads,
        headDim: D,
        q: a.q,
        k: p.kv.k[l],
        v: p.kv.v[l],
        out: a.o,
        lse: a.lse,
      });
    } else {
      await attentionForward(rec, {
        ...this.attentionOptions(l),
        queries: N,
        keys: N,
        qHeads: c.numHeads,
        kvHeads: c.numKvHeads,
        headDim: D,
        segmentIds: p.segments,
        q: a.q,
        k: a.k,
        v: a.v,
        out: a.o,
        lse: a.lse,
      });
    }
    rec.copy(hIn, 0, a.hMid, 0, N * H * 4);
    if (c.gemma) {
      // modeling_gemma3.py Gemma3DecoderLayer: h + post_attention_layernorm(o_proj(attn)).
      await this.linearForward(rec, p, l, 'o_proj', a.o, a.attnOut!, a);
      await this.normOntoResidual(rec, N, a.attnOut!, `${pre}.post_attention_layernorm.weight`, a.rstdAttnOut!, a.hMid);
    } else await this.linearForward(rec, p, l, 'o_proj', a.o, a.hMid, a, 1);
    await rmsnormForward(rec, {
      x: a.hMid,
      weight: this.model.tensor(this.mlpNormName(l)),
      y: a.xn2,
      rstd: a.rstd2,
      rows: N,
      width: H,
      eps,
      offset: this.normOffset,
    });
    if (c.fusedProjections) await this.fusedForward(rec, p, l, 'gate_up_proj', a.xn2, [a.gate, a.up], a);
    else {
      await this.linearForward(rec, p, l, 'gate_proj', a.xn2, a.gate, a);
      await this.linearForward(rec, p, l, 'up_proj', a.xn2, a.up, a);
    }
    await swigluForward(rec, {
      gate: a.gate,
      up: a.up,
      y: a.act,
      rows: N,
      width: c.intermediateSize,
      activation: this.act,
    });
    rec.copy(a.hMid, 0, hOut, 0, N * H * 4);
    if (c.gemma) {
      // h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h))).
      await this.linearForward(rec, p, l, 'down_proj', a.act, a.mlpOut!, a);
      await this.normOntoResidual(rec, N, a.mlpOut!, `${pre}.post_feedforward_layernorm.weight`, a.rstdMlpOut!, hOut);
    } else await this.linearForward(rec, p, l, 'down_proj', a.act, hOut, a, 1);
  }

  /** Gemma: h += norm(x) with the (1 + w) weight `name`, rstd saved for the backward. */
  private async normOntoResidual(rec: Recorder, N: number, x: Tensor, name: string, rstd: Tensor, h: Tensor) {
    const c = this.c;
    await rmsnormForward(rec, {
      x,
      weight: this.model.tensor(name),
      y: h,
      rstd,
      rows: N,
      width: c.hiddenSize,
      eps: c.rmsNormEps,
      offset: this.normOffset,
      accumulate: true,
    });
  }

  /**
   * Gemma: the backward of normOntoResidual. dh (dL/dh after the add) flows on unchanged through
   * the residual; the normed branch's input gradient goes to `dx`, the weight's to its gradient.
   */
  private async normOntoResidualBackward(
    rec: Recorder,
    N: number,
    x: Tensor,
    name: string,
    rstd: Tensor,
    dh: Tensor,
    dx: Tensor,
    s: BackScratch,
  ): Promise<void> {
    await rmsnormBackward(rec, {
      x,
      rstd,
      weight: this.model.tensor(name),
      dy: dh,
      dx,
      dWeight: this.grads.get(name),
      accumulateDWeight: true,
      partials: s.partials,
      rows: N,
      width: this.c.hiddenSize,
      offset: this.normOffset,
    });
  }

  /** The norm in front of the MLP: Gemma's pre_feedforward_layernorm, Llama's post_attention_layernorm. */
  private mlpNormName(l: number): string {
    return `model.layers.${l}.${this.c.gemma ? 'pre_feedforward' : 'post_attention'}_layernorm.weight`;
  }

  /** RMSNorm weight offset: Gemma's (1 + w). */
  private get normOffset(): number {
    return normOffset(this.c);
  }

  private get act() {
    return mlpActivation(this.c);
  }

  /** Gemma: the softmax scale and the soft-capping; every model: the layer's sliding window. */
  private attentionOptions(l: number): { scale?: number; window: number | null; softcap: number | null } {
    const g = this.c.gemma;
    return {
      ...(g ? { scale: g.attentionScale } : {}),
      window: layerWindow(this.c, l),
      softcap: g?.attnSoftcap ?? null,
    };
  }

  /** What RoPE forward and backward share: positions, frequencies and head layout of this pass. */
  private ropeShape(p: PassInputs, tokens: number, layer: number) {
    const c = this.c;
    return {
      positionIds: p.positions,
      // Gemma 3's sliding layers rotate with rope_local_base_freq (Model.invFreqLocal).
      invFreq: this.model.invFreqLocal && layerWindow(c, layer) !== null ? this.model.invFreqLocal : p.invFreq,
      tokens,
      qHeads: c.numHeads,
      kvHeads: c.numKvHeads,
      headDim: c.headDim,
      rotaryDim: c.rotaryDim,
      attentionScaling: ropeAttentionScaling(c),
    };
  }

  /** Batched decode: each row's K/V go to its own cache and its query attends over that cache alone. */
  private async attendOwnCaches(
    rec: Recorder,
    caches: NonNullable<PassInputs['kvRows']>,
    l: number,
    a: LayerActs,
  ): Promise<void> {
    const c = this.c;
    const qBytes = c.numHeads * c.headDim * 4;
    const kvBytes = c.numKvHeads * c.headDim * 4;
    const q = this.zeros([1, c.numHeads * c.headDim], 'attn.q_row', 'scratch');
    const out = this.zeros([1, c.numHeads * c.headDim], 'attn.out_row', 'scratch');
    const lse = this.zeros([c.numHeads, 1], 'attn.lse_row', 'scratch');
    this.deferred.push(q, out, lse);
    for (const [n, kv] of caches.entries()) {
      rec.copy(a.k, n * kvBytes, kv.k[l], kv.offset * kvBytes, kvBytes);
      rec.copy(a.v, n * kvBytes, kv.v[l], kv.offset * kvBytes, kvBytes);
      rec.copy(a.q, n * qBytes, q, 0, qBytes);
      await attentionForward(rec, {
        ...this.attentionOptions(l),
        queries: 1,
        keys: kv.offset + 1,
        queryOffset: kv.offset,
        qHeads: c.numHeads,
        kvHeads: c.numKvHeads,
        headDim: c.headDim,
        q,
        k: kv.k[l],
        v: kv.v[l],
        out,
        lse,
      });
      rec.copy(out, 0, a.o, n * qBytes, qBytes);
    }
  }

  /**
   * dh: on entry dL/dhOut, on exit dL/dhIn. Without `inputGrad` (layer 0 when the embedding does
   * not train) the gradient is not carried past q/k/v: only their own parameter gradients are made.
   */
  private async layerBackward(
    rec: Recorder,
    p: PassInputs,
    l: number,
    hIn: Tensor,
    a: LayerActs,
    dh: Tensor,
    s: BackScratch,
    inputGrad = true,
  ): Promise<void> {
    const c = this.c;
    const N = p.hb.N;
    const H = c.hiddenSize;
    const D = c.headDim;
    const I = c.intermediateSize;
    const pre = `model.layers.${l}`;
    const normGrad = (name: string) => this.grads.get(name);
    // MLP
    // Gemma: down_proj's output went through post_feedforward_layernorm (its gradient into dSub).
    if (c.gemma)
      await this.normOntoResidualBackward(
        rec,
        N,
        a.mlpOut!,
        `${pre}.post_feedforward_layernorm.weight`,
        a.rstdMlpOut!,
        dh,
        s.dSub!,
        s,
      );
    await this.linearBackward(rec, p, l, 'down_proj', a.act, c.gemma ? s.dSub! : dh, s.dAct, a, false);
    // silu(gate)·up is not read again once down_proj's gradients are made: dGate takes its buffer
    // (one [N, intermediate] scratch fewer).
    const dGate = a.act;
    await swigluBackward(rec, {
      gate: a.gate,
      up: a.up,
      dy: s.dAct,
      dGate,
      dUp: s.dUp,
      rows: N,
      width: I,
      activation: this.act,
    });
    if (c.fusedProjections) await this.fusedBackward(rec, p, l, 'gate_up_proj', a.xn2, [dGate, s.dUp], s.dXn, a, false);
    else {
      await this.linearBackward(rec, p, l, 'gate_proj', a.xn2, dGate, s.dXn, a, false);
      await this.linearBackward(rec, p, l, 'up_proj', a.xn2, s.dUp, s.dXn, a, true);
    }
    await rmsnormBackward(rec, {
      x: a.hMid,
      rstd: a.rstd2,
      weight: this.model.tensor(this.mlpNormName(l)),
      dy: s.dXn,
      dx: dh,
      accumulateDx: true,
      dWeight: normGrad(this.mlpNormName(l)),
      accumulateDWeight: true,
      offset: this.normOffset,
      partials: s.partials,
      rows: N,
      width: H,
    });
    // Attention
    if (c.gemma)
      await this.normOntoResidualBackward(
        rec,
        N,
        a.attnOut!,
        `${pre}.post_attention_layernorm.weight`,
        a.rstdAttnOut!,
        dh,
        s.dSub!,
        s,
      );
    await this.linearBackward(rec, p, l, 'o_proj', a.o, c.gemma ? s.dSub! : dh, s.dO, a, false);
    await attentionBackward(rec, {
      ...this.attentionOptions(l),
      queries: N,
      keys: N,
      qHeads: c.numHeads,
      kvHeads: c.numKvHeads,
      headDim: D,
      segmentIds: p.segments,
      q: a.q,
      k: a.k,
      v: a.v,
      out: a.o,
      lse: a.lse,
      dOut: s.dO,
      dq: s.dq,
      dk: s.dk,
      dv: s.dv,
      scratch: s.attn,
    });
    if (!c.noRopeLayers.includes(l)) await ropeBackward(rec, { dq: s.dq, dk: s.dk, ...this.ropeShape(p, N, l) });
    let dq = s.dq;
    let dk = s.dk;
    if (c.qkNorm) {
      const qn = `${pre}.self_attn.q_norm.weight`;
      const kn = `${pre}.self_attn.k_norm.weight`;
      await rmsnormBackward(rec, {
        x: a.qPre!,
        rstd: a.rstdQ!,
        weight: this.model.tensor(qn),
        dy: s.dq,
        dx: s.dqPre!,
        dWeight: normGrad(qn),
        accumulateDWeight: true,
        offset: this.normOffset,
        partials: s.partials,
        rows: N * c.numHeads,
        width: D,
      });
      await rmsnormBackward(rec, {
        x: a.kPre!,
        rstd: a.rstdK!,
        weight: this.model.tensor(kn),
        dy: s.dk,
        dx: s.dkPre!,
        dWeight: normGrad(kn),
        accumulateDWeight: true,
        offset: this.normOffset,
        partials: s.partials,
        rows: N * c.numKvHeads,
        width: D,
      });
      dq = s.dqPre!;
      dk = s.dkPre!;
    }
    const ln1 = `${pre}.input_layernorm.weight`;
    const dW1 = normGrad(ln1);
    const dXn = inputGrad || dW1 ? s.dXn : undefined;
    if (c.fusedProjections) await this.fusedBackward(rec, p, l, 'qkv_proj', a.xn1, [dq, dk, s.dv], dXn, a, false);
    else {
      await this.linearBackward(rec, p, l, 'q_proj', a.xn1, dq, dXn, a, false);
      await this.linearBackward(rec, p, l, 'k_proj', a.xn1, dk, dXn, a, true);
      await this.linearBackward(rec, p, l, 'v_proj', a.xn1, s.dv, dXn, a, true);
    }
    if (dXn)
      await rmsnormBackward(rec, {
        x: hIn,
        rstd: a.rstd1,
        weight: this.model.tensor(ln1),
        dy: s.dXn,
        dx: inputGrad ? dh : undefined,
        accumulateDx: true,
        dWeight: dW1,
        accumulateDWeight: true,
        offset: this.normOffset,
        partials: s.partials,
        rows: N,
        width: H,
      });
  }

  // -------------------------------------------------------------------------------------------
  // Embedding and LM head (row-split aware)

  private async embed(rec: Recorder, p: PassInputs, out: Tensor): Promise<void> {
    const c = this.c;
    const N = p.hb.N;
    const W = this.model.embedding;
    if (isHostWeight(W)) {
      // Only the batch's rows reach the GPU: gathered here, then looked up as a table of N rows
      // (the NEFTune noise hashes the output element, so it is the same as from the full table).
      const rows = uploadTensor(
        this.gpu,
        gatherHostRows(W, p.hb.ids),
        tensorSpec(W.dtype, [N, c.hiddenSize], 'activations', 'embed.rows(host)'),
      );
      const local = uploadTensor(
        this.gpu,
        Int32Array.from({ length: N }, (_, n) => n),
        tensorSpec('i32', [N], 'activations', 'embed.row_ids'),
      );
      this.deferred.push(rows, local);
      await embeddingForward(rec, {
        ids: local,
        weight: rows,
        out,
        tokens: N,
        vocab: N,
        hidden: c.hiddenSize,
        neftune: p.neftune,
        ...this.embedScaling,
      });
      return;
    }
    if (!isRowSplit(W)) {
      await embeddingForward(rec, {
        ids: p.ids,
        weight: W,
        out,
        tokens: N,
        vocab: c.vocabSize,
        hidden: c.hiddenSize,
        neftune: p.neftune,
        ...this.embedScaling,
      });
      return;
    }
    // Split table: gather each part's tokens into a scratch, then copy runs of rows into place.
    for (const part of W.parts) {
      const where: number[] = [];
      for (let n = 0; n < N; n++) if (p.hb.ids[n] >= part.row0 && p.hb.ids[n] < part.row0 + part.rows) where.push(n);
      if (!where.length) continue;
      const local = uploadTensor(
        this.gpu,
        Int32Array.from(where, (n) => p.hb.ids[n] - part.row0),
        tensorSpec('i32', [where.length], 'scratch', 'embed.local_ids'),
      );
      const tmp = this.zeros([where.length, c.hiddenSize], 'embed.part_rows', 'scratch');
      const nf = p.neftune ? { ...p.neftune, stream: p.neftune.stream * 64 + W.parts.indexOf(part) } : undefined;
      await embeddingForward(rec, {
        ids: local,
        weight: part.tensor,
        out: tmp,
        tokens: where.length,
        vocab: part.rows,
        hidden: c.hiddenSize,
        neftune: nf,
        ...this.embedScaling,
      });
      const row = c.hiddenSize * 4;
      for (let j = 0; j < where.length;) {
        let k = j + 1;
        while (k < where.length && where[k] === where[k - 1] + 1) k++;
        rec.copy(tmp, j * row, out, where[j] * row, (k - j) * row);
        j = k;
      }
      // Buffers stay alive until the recorder is submitted: release them afterwards.
      this.deferred.push(local, tmp);
    }
  }

  /** Gemma's √hidden in the embedding's dtype (embeddingScale); 1 for the others. */
  private get embedScale(): number {
    return embeddingScale(this.c, this.model.embedding.dtype as 'f32' | 'bf16' | 'f16');
  }

  /**
   * The embedding lookup's scale; Gemma 2 multiplies in its forward after the embedding module
   * (modeling_gemma2.py Gemma2Model), so transformers' NEFTune hook adds its noise before the scale,
   * Gemma 3 inside the module (Gemma3TextScaledWordEmbedding), so after it.
   */
  private get embedScaling(): { scale: number; noiseBeforeScale: boolean } {
    return { scale: this.embedScale, noiseBeforeScale: this.c.architecture === 'Gemma2ForCausalLM' };
  }

  private deferred: Tensor[] = [];
  private deferredActions: (() => void)[] = [];

  private flushDeferred(): void {
    for (const t of this.deferred) releaseTensor(this.gpu, t);
    this.deferred = [];
  }

  /** After submitting an external recorder given to trainMicroBatch: frees what it used. */
  releaseDeferred(): void {
    this.flushDeferred();
    for (const f of this.deferredActions) f();
    this.deferredActions = [];
  }

  private async lmHeadForward(rec: Recorder, xf: Tensor, r0: number, R: number, logits: Tensor): Promise<void> {
    const { hiddenSize: H, vocabSize: V } = this.c;
    const W = this.model.lmHead;
    if (this.decodeStep(R)) {
      for (const part of isRowSplit(W) ? W.parts : [{ tensor: W, row0: 0, rows: V }])
        await matvec(rec, {
          x: xf,
          xOffset: r0 * H,
          w: part.tensor,
          y: logits,
          yOffset: part.row0,
          yRowStride: V,
          rows: R,
          N: part.rows,
          K: H,
        });
      return;
    }
    if (!isRowSplit(W)) {
      await matmul(rec, { a: xf, aOffset: r0 * H, b: W, c: logits, M: R, N: V, K: H, transB: true });
      return;
    }
    // One 1-row product per token row so each part lands in its vocabulary columns.
    for (const part of (W as RowSplitWeight).parts) {
      await matmul(rec, {
        a: xf,
        aOffset: r0 * H,
        aBatchStride: H,
        b: part.tensor,
        bBatchStride: 0,
        c: logits,
        cOffset: part.row0,
        cBatchStride: V,
        M: 1,
        N: part.rows,
        K: H,
        batch: R,
        transB: true,
      });
    }
  }

  private async lmHeadBackward(
    rec: Recorder,
    xf: Tensor,
    r0: number,
    R: number,
    dLogits: Tensor,
    dxf: Tensor,
  ): Promise<void> {
    const { hiddenSize: H, vocabSize: V } = this.c;
    const W = this.model.lmHead;
    if (!isRowSplit(W)) {
      await matmul(rec, { a: dLogits, b: W, c: dxf, cOffset: r0 * H, M: R, N: H, K: V });
    } else {
      for (const [i, part] of W.parts.entries()) {
        await matmul(rec, {
          a: dLogits,
          aOffset: part.row0,
          aBatchStride: V,
          b: part.tensor,
          bBatchStride: 0,
          c: dxf,
          cOffset: r0 * H,
          cBatchStride: H,
          M: 1,
          N: H,
          K: part.rows,
          batch: R,
          beta: i ? 1 : 0,
        });
      }
    }
    const tiedOrHead =
      this.grads.get('lm_head.weight') ??
      (this.c.tieWordEmbeddings ? this.grads.get('model.embed_tokens.weight') : undefined);
    if (tiedOrHead)
      await matmul(rec, { a: dLogits, b: xf, bOffset: r0 * H, c: tiedOrHead, M: V, N: H, K: R, transA: true, beta: 1 });
  }

  private chunkRows(N: number): number {
    return Math.max(1, Math.min(N, this.opts.lossChunkRows ?? Math.floor(LOGITS_CHUNK_BYTES / (4 * this.c.vocabSize))));
  }

  /** Row ranges whose logits are computed: the label runs (or every row when logits are captured), cut into chunks. */
  private chunks(hb: HostBatch, all: boolean): [number, number][] {
    const R = this.chunkRows(hb.N);
    const runs = all ? [[0, hb.N] as [number, number]] : labelRuns(hb.shifted);
    const out: [number, number][] = [];
    for (const [s, e] of runs) for (let r = s; r < e; r += R) out.push([r, Math.min(R, e - r)]);
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // Passes

  /**
   * Records forward + backward of one micro-batch and submits. Gradients are ADDED to this.grads
   * (clear them at the start of an accumulation window); the scaled loss is added to loss.accum.
   */
  async trainMicroBatch(
    p: PassInputs,
    loss: LossTarget,
    capture?: { logits?: Tensor },
    external?: Recorder,
  ): Promise<{ dispatches: number }> {
    // With an external recorder nothing is submitted and every buffer is kept until
    // releaseDeferred() (called after the caller's submit): a buffer handed back to the pool
    // mid-recording could be refilled by a host write that the queue would run too early.
    const rec = external ?? new Recorder(this.gpu, 'train micro-batch');
    const c = this.c;
    const N = p.hb.N;
    const H = c.hiddenSize;
    const L = c.numLayers;
    const ckpt = !!this.opts.checkpointing;
    // bf16 checkpoints: one f32 working copy of the residual stream (each layer updates it in
    // place) and every layer input h0..hL kept as bf16. Otherwise h0..hL in f32.
    const ck16 = ckpt && this.opts.checkpointPrecision === 'bf16';
    const hs: Tensor[] = [];
    const kept: Tensor[] = [];
    if (ck16) {
      hs.push(this.zeros([N, H], 'h(f32 working copy)', 'activations'));
      for (let l = 0; l <= L; l++)
        kept.push(createTensor(this.gpu, tensorSpec('bf16', [N, H], 'activations', `h${l}(bf16)`)));
    } else for (let l = 0; l <= L; l++) hs.push(this.zeros([N, H], `h${l}`, 'activations'));
    const hAt = (l: number) => (ck16 ? hs[0] : hs[l]);
    // Keep h_l as bf16 and continue from the rounded value (what the recompute will start from).
    const keep = async (l: number) => {
      await packBf16(rec, { src: hs[0], dst: kept[l], n: N * H });
      await unpackBf16(rec, { src: kept[l], dst: hs[0], n: N * H });
    };
    const acts: LayerActs[] = [];
    const shared = ckpt ? this.allocActs(N, 'activations', 'layer(recompute)') : null;
    const s = this.allocBackScratch(N);
    try {
      await this.embed(rec, p, hAt(0));
      if (ck16) await keep(0);
      for (let l = 0; l < L; l++) {
        const a = shared ?? this.allocActs(N, 'activations', `layer${l}`);
        this.allocLoraWs(a, l, N);
        if (!shared) acts.push(a);
        // In place with bf16 checkpoints: layerForward reads hIn only before it first writes hOut.
        await this.layerForward(rec, p, l, hAt(l), hAt(l + 1), a);
        if (ck16) await keep(l + 1);
      }
      // Final norm, logits in chunks, loss, dLogits in place, dxf.
      const xf = this.zeros([N, H], 'xf', 'activations');
      const rstdF = this.zeros([N], 'rstd_f', 'activations');
      this.deferred.push(xf, rstdF);
      const normW = this.model.tensor('model.norm.weight');
      await rmsnormForward(rec, {
        x: hAt(L),
        weight: normW,
        y: xf,
        rstd: rstdF,
        rows: N,
        width: H,
        eps: c.rmsNormEps,
        offset: this.normOffset,
      });
      rec.clear(s.dxf);
      await this.lossChunks(rec, p, xf, s.dxf, loss, true, capture?.logits);
      await rmsnormBackward(rec, {
        x: hAt(L),
        rstd: rstdF,
        weight: normW,
        dy: s.dxf,
        dx: s.dh,
        dWeight: this.grads.get('model.norm.weight'),
        accumulateDWeight: true,
        offset: this.normOffset,
        partials: s.partials,
        rows: N,
        width: H,
      });
      for (let l = L - 1; l >= 0; l--) {
        const a = shared ?? acts[l];
        if (shared) {
          this.allocLoraWs(a, l, N);
          if (ck16) {
            // The layer's output is not needed again: dxf (free after the loss) takes it.
            await unpackBf16(rec, { src: kept[l], dst: hs[0], n: N * H });
            await this.layerForward(rec, p, l, hs[0], s.dxf, a);
          } else await this.layerForward(rec, p, l, hs[l], hs[l + 1], a);
        }
        await this.layerBackward(rec, p, l, hAt(l), a, s.dh, s, l > 0 || this.grads.has('model.embed_tokens.weight'));
      }
      const dEmbed = this.grads.get('model.embed_tokens.weight');
      if (dEmbed) {
        const csr = embeddingCsr(p.hb.ids, c.vocabSize);
        const t = (a: Int32Array, label: string) =>
          uploadTensor(this.gpu, a, tensorSpec('i32', [Math.max(1, a.length)], 'scratch', label));
        const u = t(csr.uniqueIds, 'csr.unique'),
          o = t(csr.offsets, 'csr.offsets'),
          ps = t(csr.positions, 'csr.positions');
        this.deferred.push(u, o, ps);
        await embeddingBackward(rec, {
          dOut: s.dh,
          uniqueIds: u,
          offsets: o,
          positions: ps,
          uniqueCount: csr.uniqueIds.length,
          dWeight: dEmbed,
          accumulate: true,
          tokens: N,
          vocab: c.vocabSize,
          hidden: H,
          scale: this.embedScale,
        });
      }
      if (external) return { dispatches: 0 };
      await rec.submit();
      return { dispatches: rec.dispatchCount };
    } finally {
      const release = () => {
        hs.forEach((t) => releaseTensor(this.gpu, t));
        kept.forEach((t) => releaseTensor(this.gpu, t));
        acts.forEach((a) => this.releaseActs(a));
        if (shared) this.releaseActs(shared);
        this.releaseBackScratch(s);
      };
      if (external) this.deferredActions.push(release);
      else {
        this.flushDeferred();
        release();
      }
    }
  }

  /**
   * Records embedding, every layer and the final norm over the batch's tokens into `rec`; the
   * normalised hidden state is `xf` [N, H]. `release` frees what it allocated (call it after
   * the caller's submit and flushDeferred).
   */
  private async recordFinalHidden(
    rec: Recorder,
    p: PassInputs,
    label: string,
  ): Promise<{ xf: Tensor; release: () => void }> {
    const c = this.c;
    const N = p.hb.N;
    const H = c.hiddenSize;
    const h = [this.zeros([N, H], 'h_a', 'activations'), this.zeros([N, H], 'h_b', 'activations')];
    const a = this.allocActs(N, 'activations', `layer(${label})`);
    const xf = this.zeros([N, H], 'xf', 'activations');
    const rstdF = this.zeros([N], 'rstd_f', 'activations');
    const release = () => {
      h.forEach((t) => releaseTensor(this.gpu, t));
      this.releaseActs(a);
      releaseTensor(this.gpu, xf);
      releaseTensor(this.gpu, rstdF);
    };
    try {
      await this.embed(rec, p, h[0]);
      for (let l = 0; l < c.numLayers; l++) {
        this.allocLoraWs(a, l, N);
        await this.layerForward(rec, p, l, h[l % 2], h[(l + 1) % 2], a);
      }
      await rmsnormForward(rec, {
        x: h[c.numLayers % 2],
        weight: this.model.tensor('model.norm.weight'),
        y: xf,
        rstd: rstdF,
        rows: N,
        width: H,
        eps: c.rmsNormEps,
        offset: this.normOffset,
      });
    } catch (e) {
      this.flushDeferred();
      release();
      throw e;
    }
    return { xf, release };
  }

  /**
   * Forward only: adds the scaled loss of the labelled rows to loss.accum (evaluation), optionally
   * captures logits [N, V] and the per-row NLL [N] (written on labelled rows only: preference
   * losses sum it per sequence).
   */
  async forwardLoss(
    p: PassInputs,
    loss: LossTarget,
    capture?: { logits?: Tensor; hidden?: Tensor; rowLoss?: Tensor },
  ): Promise<{ dispatches: number }> {
    const rec = new Recorder(this.gpu, 'eval forward');
    const { xf, release } = await this.recordFinalHidden(rec, p, 'eval');
    try {
      if (capture?.hidden) rec.copy(xf, 0, capture.hidden, 0, p.hb.N * this.c.hiddenSize * 4);
      await this.lossChunks(rec, p, xf, null, loss, false, capture?.logits, capture?.rowLoss);
      await rec.submit();
      return { dispatches: rec.dispatchCount };
    } finally {
      this.flushDeferred();
      release();
    }
  }

  /**
   * Forward of the new tokens only (KV cache or not): logits of the last `rows` tokens into
   * `logits` [rows, V] (1: the next token of one sequence; a batched decode step: every row).
   */
  async forwardLast(p: PassInputs, logits: Tensor, rows = 1): Promise<{ dispatches: number }> {
    const rec = new Recorder(this.gpu, 'generate forward');
    const { xf, release } = await this.recordFinalHidden(rec, p, 'generate');
    try {
      await this.lmHeadForward(rec, xf, p.hb.N - rows, rows, logits);
      await this.capLogits(rec, logits, rows);
      await rec.submit();
      return { dispatches: rec.dispatchCount };
    } finally {
      this.flushDeferred();
      release();
    }
  }

  /**
   * Gemma 2's final_logit_softcapping (modeling_gemma2.py Gemma2ForCausalLM): logits ← cap·tanh(logits
   * / cap) before the loss and sampling; crossEntropy takes the gradient back through it.
   */
  private async capLogits(rec: Recorder, logits: Tensor, rows: number): Promise<void> {
    const cap = this.c.gemma?.finalSoftcap;
    if (cap) await softcapForward(rec, { x: logits, n: rows * this.c.vocabSize, cap });
  }

  private async lossChunks(
    rec: Recorder,
    p: PassInputs,
    xf: Tensor,
    dxf: Tensor | null,
    loss: LossTarget,
    train: boolean,
    logitsOut?: Tensor,
    rowLossOut?: Tensor,
  ): Promise<void> {
    const V = this.c.vocabSize;
    const N = p.hb.N;
    const chunks = this.chunks(p.hb, !!logitsOut);
    if (!chunks.length) return;
    const R = Math.max(...chunks.map(([, r]) => r));
    const logits = this.zeros([R, V], 'logits_chunk', 'scratch');
    const rowLoss = rowLossOut ?? this.zeros([N], 'row_loss', 'scratch');
    this.deferred.push(logits);
    if (!rowLossOut) this.deferred.push(rowLoss);
    for (const [r0, rows] of chunks) {
      await this.lmHeadForward(rec, xf, r0, rows, logits);
      await this.capLogits(rec, logits, rows);
      if (logitsOut) rec.copy(logits, 0, logitsOut, r0 * V * 4, rows * V * 4);
      await crossEntropy(rec, {
        logits,
        labels: p.labels,
        labelOffset: r0,
        rowLoss,
        lossOffset: r0,
        lossScale: loss.lossScale,
        lossAccum: { tensor: loss.accum, index: loss.accumIndex, accumulate: true },
        rows,
        vocab: V,
        writeGrad: train,
        softcap: this.c.gemma?.finalSoftcap,
      });
      if (train && dxf) await this.lmHeadBackward(rec, xf, r0, rows, logits, dxf);
    }
  }

  private allocBackScratch(N: number): BackScratch {
    const c = this.c;
    const H = c.hiddenSize;
    const QD = c.numHeads * c.headDim;
    const KD = c.numKvHeads * c.headDim;
    const I = c.intermediateSize;
    const t = (shape: number[], name: string) => this.zeros(shape, `grad.${name}`, 'scratch');
    const partialRows = Math.max(N, c.qkNorm ? N * c.numHeads : 0);
    const width = Math.max(H, c.headDim);
    const s: BackScratch = {
      dh: t([N, H], 'dh'),
      dxf: t([N, H], 'dxf'),
      dXn: t([N, H], 'dxn'),
      dAct: t([N, I], 'dact'),
      dUp: t([N, I], 'dup'),
      dO: t([N, QD], 'do'),
      dq: t([N, QD], 'dq'),
      dk: t([N, KD], 'dk'),
      dv: t([N, KD], 'dv'),
      partials: t(
        [Math.max(rmsnormWeightGradPartials(partialRows, width), rmsnormWeightGradPartials(N, H))],
        'norm_partials',
      ),
    };
    s.attn = createAttentionScratch(
      this.gpu,
      { queries: N, keys: N, qHeads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim },
      'grad.attention',
    );
    if (c.gemma) s.dSub = t([N, H], 'dsub');
    if (c.qkNorm) {
      s.dqPre = t([N, QD], 'dq_pre');
      s.dkPre = t([N, KD], 'dk_pre');
    }
    return s;
  }

  private releaseBackScratch(s: BackScratch): void {
    const { attn, ...tensors } = s;
    for (const v of Object.values(tensors)) if (v) releaseTensor(this.gpu, v);
    if (attn) releaseAttentionScratch(this.gpu, attn);
  }
}

interface BackScratch {
  dh: Tensor;
  dxf: Tensor;
  dXn: Tensor;
  dAct: Tensor;
  dUp: Tensor;
  dO: Tensor;
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  dqPre?: Tensor;
  dkPre?: Tensor;
  /** Gemma: the gradient of o_proj's / down_proj's output behind its norm. */
  dSub?: Tensor;
  partials: Tensor;
  attn?: AttentionScratch;
}
