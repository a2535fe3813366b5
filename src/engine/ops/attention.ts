// Flash-style causal attention with GQA, packed-sequence segments, a KV-cache query offset, a
// sliding window and logit soft-capping, forward and FlashAttention-2 backward; see shaders/attention.wgsl, shaders/attention_backward.wgsl
// and shaders/include/attention_common.wgsl (layouts and the masking rule).
//
// Layouts (token-major f32): Q, O, dO, dQ [N, Hq·D]; K, V, dK, dV [Nk, Hkv·D]; LSE [Hq, N] in
// natural-log units; segmentIds i32[Nk] indexed by key position (query i sits at key position
// queryOffset + i, so in training N == Nk and it is simply i32[N]). No buffer of size N×Nk exists
// anywhere: backward scratch is rowStats [2, Hq, N] (D_i, then a copy of LSE: one binding, so dK/dV
// stay within WebGPU's default 8 storage buffers per stage) plus, when Hq > Hkv, per-query-head
// dK/dV partials [Nk, Hq, D] (summed per KV head afterwards, because WGSL has no float atomics).
import type { Gpu } from '../gpu/device.ts';
import { GpuError } from '../gpu/errors.ts';
import { Params, type Recorder } from '../gpu/recorder.ts';
import { describe, numelOf, type Tensor } from '../gpu/tensor.ts';
import { createTensor, releaseTensor, tensorSpec } from '../gpu/transfer.ts';
import { check, checkOperands, foldGrid, type Operand } from './kernel.ts';

export interface AttentionShape {
  /** N: query rows. */
  queries: number;
  /** Nk: key rows (== N in training). */
  keys: number;
  qHeads: number;
  kvHeads: number;
  headDim: number;
  /** Softmax scale; default 1/√headDim. */
  scale?: number;
  /** Query row i sits at key index queryOffset + i (KV-cache prefill/decode); default 0. */
  queryOffset?: number;
  /**
   * i32 per key position (training: i32[N]); query n sees keys m ≤ n with the same id. A query
   * with id < 0 is padding: O = 0, LSE = 0 and no gradient flows through it.
   */
  segmentIds?: Tensor;
  /**
   * Sliding window in keys: the query at key position p = queryOffset + i also needs p − m < window,
   * i.e. it sees `window` keys including itself (transformers masking_utils
   * sliding_window_overlay; Mistral's and Gemma's `sliding_window`). Computed in the kernels, which
   * skip key blocks outside every window, so cost is O(N·window). Undefined, null or 0: full causal
   * attention. A uniform, not a pipeline constant: layers with different windows share pipelines.
   */
  window?: number | null;
  /**
   * Attention-logit soft-capping (Gemma 2 `attn_logit_softcapping`, modeling_gemma2.py
   * eager_attention_forward): each scaled score s becomes softcap·tanh(s / softcap) before the
   * mask and softmax; LSE is that of the capped scores, and the backward multiplies dS by
   * 1 − tanh²(s / softcap). Undefined, null or 0: no capping.
   */
  softcap?: number | null;
}

export interface AttentionForwardArgs extends AttentionShape {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  out: Tensor;
  /** f32 [Hq, N]: per-row log-sum-exp of the scaled scores, needed by the backward. */
  lse?: Tensor;
}

export interface AttentionBackwardArgs extends AttentionShape {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  out: Tensor;
  lse: Tensor;
  dOut: Tensor;
  /** Overwritten. */
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  scratch?: AttentionScratch;
}

/** Backward scratch (see attentionScratchBytes); reusable across layers and steps of one shape or smaller. */
export interface AttentionScratch {
  /** f32 [2, Hq, N]: D_i = Σ_d dO·O, then LSE_i. */
  rowStats: Tensor;
  /** f32 [Nk, Hq, D] per-query-head dK/dV partials; null when Hq == Hkv. */
  dkHeads: Tensor | null;
  dvHeads: Tensor | null;
}

const THREADS = 64; // forward / dq: rows × lanes per workgroup; also rowDot and reduceHeads
const MAX_KEYS_PER_WG = 32; // dkdv
const MAX_DKDV_THREADS = 256;
const MIN_STORAGE = 16384; // WebGPU's guaranteed maxComputeWorkgroupStorageSize
const MAX_BLOCK = 32;
// Per-thread register arrays: the forward holds 2 vectors of D/lanes floats, dq 3, dkdv 4, plus
// one or two score arrays per block; these caps (vec4s per lane) keep each thread near 128–160
// floats so real GPUs do not spill.
const MAX_ROW_VEC4 = 16;
const MAX_KEY_VEC4 = 8;

let storageBudgetOverride: number | null = null;

/**
 * Tests only: tile as if the device offered `bytes` of workgroup memory (null restores), so the
 * 16 KiB-minimum tiling is exercised on adapters that offer more.
 */
export function setAttentionStorageBudgetForTests(bytes: number | null): void {
  storageBudgetOverride = bytes;
}

export interface AttentionTiling {
  /** Forward: lanes per (query, head) row, rows per workgroup, keys per K/V block. */
  forward: { lanes: number; rows: number; keyBlock: number };
  /** dQ pass: same roles as the forward (it holds three vectors per row instead of two). */
  dq: { lanes: number; rows: number; keyBlock: number };
  /** dK/dV pass: lanes per key, keys per workgroup, query rows per Q/dO block. */
  dkdv: { lanes: number; keys: number; queryBlock: number };
}

function lanesFor(d4: number, maxPerLane: number): number {
  for (let l = 1; l <= d4; l++) if (d4 % l === 0 && d4 / l <= maxPerLane) return l;
  return d4;
}

/** Workgroup bytes per block row of each kernel (K/V or Q/dO rows, scalars, partial dots). */
export const attentionBlockBytes = {
  forward: (d: number, lanes: number, threads: number) => 8 * d + 4 + (lanes > 1 ? 4 * threads : 0),
  dq: (d: number, lanes: number, threads: number) => 8 * d + 4 + (lanes > 1 ? 8 * threads : 0),
  dkdv: (d: number, lanes: number, threads: number) => 8 * d + 12 + (lanes > 1 ? 8 * threads : 0),
};

/**
 * Block sizes that fit `storageBytes` of workgroup memory, in multiples of 4 up to 32 rows:
 * forward/dq hold K and V blocks plus (with lanes > 1) the lanes' partial dot products; dkdv
 * holds Q and dO blocks, three per-row scalars and its partial dots. Lanes split the head dim so
 * each thread's register vectors stay at ≤ 64 floats (forward: q, acc) or ≤ 32 (dq: q, dO, acc;
 * dkdv: k, v, dk, dv).
 */
export function attentionTiling(headDim: number, storageBytes: number): AttentionTiling {
  const d4 = headDim / 4;
  const fit = (perRow: number) => Math.max(4, Math.min(MAX_BLOCK, Math.floor(storageBytes / perRow / 4) * 4));
  const rowKernel = (maxVec4: number, bytes: typeof attentionBlockBytes.forward) => {
    const lanes = lanesFor(d4, maxVec4);
    const rows = Math.floor(THREADS / lanes);
    return { lanes, rows, keyBlock: fit(bytes(headDim, lanes, rows * lanes)) };
  };
  const keyLanes = lanesFor(d4, MAX_KEY_VEC4);
  // Fewer keys per workgroup when the partial dots of even a 4-row query block would not fit.
  let keys = Math.min(MAX_KEYS_PER_WG, Math.floor(MAX_DKDV_THREADS / keyLanes));
  while (keys > 4 && 4 * attentionBlockBytes.dkdv(headDim, keyLanes, keys * keyLanes) > storageBytes)
    keys = Math.floor(keys / 2);
  return {
    forward: rowKernel(MAX_ROW_VEC4, attentionBlockBytes.forward),
    dq: rowKernel(MAX_KEY_VEC4, attentionBlockBytes.dq),
    dkdv: { lanes: keyLanes, keys, queryBlock: fit(attentionBlockBytes.dkdv(headDim, keyLanes, keys * keyLanes)) },
  };
}

/** Workgroup bytes each kernel of a tiling uses, for limit checks. */
export function attentionTilingBytes(
  headDim: number,
  t: AttentionTiling,
): { forward: number; dq: number; dkdv: number } {
  return {
    forward:
      t.forward.keyBlock * attentionBlockBytes.forward(headDim, t.forward.lanes, t.forward.rows * t.forward.lanes),
    dq: t.dq.keyBlock * attentionBlockBytes.dq(headDim, t.dq.lanes, t.dq.rows * t.dq.lanes),
    dkdv: t.dkdv.queryBlock * attentionBlockBytes.dkdv(headDim, t.dkdv.lanes, t.dkdv.keys * t.dkdv.lanes),
  };
}

function tilingFor(gpu: Gpu, headDim: number): AttentionTiling {
  const offered = gpu.limits.maxComputeWorkgroupStorageSize ?? MIN_STORAGE;
  const budget = Math.min(storageBudgetOverride ?? offered, offered, 32768);
  const t = attentionTiling(headDim, budget);
  const bytes = attentionTilingBytes(headDim, t);
  const need = Math.max(bytes.forward, bytes.dq, bytes.dkdv);
  if (need > budget) {
    throw new GpuError(
      'limit',
      `attention head_dim ${headDim}`,
      `needs ${need} bytes of workgroup memory; the device offers ${budget}`,
    );
  }
  if (t.dkdv.keys * t.dkdv.lanes > (gpu.limits.maxComputeInvocationsPerWorkgroup ?? 256)) {
    throw new GpuError(
      'limit',
      `attention head_dim ${headDim}`,
      `needs ${t.dkdv.keys * t.dkdv.lanes} threads per workgroup`,
    );
  }
  return t;
}

function scaleOf(s: AttentionShape): number {
  return s.scale ?? 1 / Math.sqrt(s.headDim);
}

/**
 * The window the kernels apply: 0 for none; otherwise at most `keys`, which changes nothing
 * (p − m ≤ keys − 1 for every pair) and keeps key + window far from u32 overflow.
 */
function windowOf(s: AttentionShape): number {
  return s.window ? Math.min(s.window, s.keys) : 0;
}

/** First key the first query can see under the window (0 without one). */
function firstWindowKey(s: AttentionShape): number {
  const w = windowOf(s);
  return w ? Math.max(0, (s.queryOffset ?? 0) + 1 - w) : 0;
}

/** Bytes the backward needs besides its inputs and outputs; linear in N and Nk. */
export function attentionScratchBytes(shape: AttentionShape): number {
  const rowStats = 2 * 4 * shape.qHeads * shape.queries;
  const heads = shape.qHeads === shape.kvHeads ? 0 : 2 * 4 * shape.keys * shape.qHeads * shape.headDim;
  return rowStats + heads;
}

/**
 * Bytes the forward allocates besides its inputs and outputs: a throw-away LSE when none is
 * passed, and per-split O/LSE when decode splits the keys (at most 32 splits of ≤ 64 rows).
 */
export function attentionForwardScratchBytes(shape: AttentionShape, withLse: boolean, gpuStorageBytes = 32768): number {
  const f = attentionTiling(shape.headDim, gpuStorageBytes).forward;
  const { splits } = attentionForwardSplits(shape, f.rows, f.keyBlock);
  const split = splits > 1 ? 4 * splits * shape.queries * shape.qHeads * (shape.headDim + 1) : 0;
  return (withLse ? 0 : 4 * shape.qHeads * shape.queries) + split;
}

export function createAttentionScratch(gpu: Gpu, shape: AttentionShape, label = 'attention'): AttentionScratch {
  const grouped = shape.qHeads !== shape.kvHeads;
  const headsSpec = (name: string) =>
    tensorSpec('f32', [shape.keys, shape.qHeads, shape.headDim], 'scratch', `${label}.${name}`);
  return {
    rowStats: createTensor(gpu, tensorSpec('f32', [2, shape.qHeads, shape.queries], 'scratch', `${label}.rowStats`)),
    dkHeads: grouped ? createTensor(gpu, headsSpec('dkHeads')) : null,
    dvHeads: grouped ? createTensor(gpu, headsSpec('dvHeads')) : null,
  };
}

export function releaseAttentionScratch(gpu: Gpu, s: AttentionScratch): void {
  for (const t of [s.rowStats, s.dkHeads, s.dvHeads]) if (t) releaseTensor(gpu, t);
}

// Scratch made on demand when the caller passes none: kept per device and grown, so layers and
// steps reuse one set (dispatches in a queue run in order, so reuse across ops is safe). A set
// outgrown while a recorder may still reference it is retired, not released: handing its buffer
// to another owner before that recorder submits would let the old dispatches overwrite it.
interface Implicit {
  shape: AttentionShape | null;
  scratch: AttentionScratch | null;
  /** LSE sink for forwards without an LSE output; per-split O and LSE of a split forward. */
  tensors: Map<string, Tensor>;
  retired: Tensor[];
}
const implicit = new WeakMap<Gpu, Implicit>();

function implicitFor(gpu: Gpu): Implicit {
  let c = implicit.get(gpu);
  if (!c) implicit.set(gpu, (c = { shape: null, scratch: null, tensors: new Map(), retired: [] }));
  return c;
}

function implicitTensor(gpu: Gpu, name: string, elements: number): Tensor {
  const c = implicitFor(gpu);
  const have = c.tensors.get(name);
  if (have && numelOf(have.shape) >= elements) return have;
  if (have) c.retired.push(have);
  const t = createTensor(gpu, tensorSpec('f32', [elements], 'scratch', `attention.${name}`));
  c.tensors.set(name, t);
  return t;
}

function fitsScratch(s: AttentionScratch, shape: AttentionShape): boolean {
  const grouped = shape.qHeads !== shape.kvHeads;
  if (numelOf(s.rowStats.shape) < 2 * shape.qHeads * shape.queries) return false;
  if (!grouped) return true;
  const need = shape.keys * shape.qHeads * shape.headDim;
  return !!s.dkHeads && !!s.dvHeads && numelOf(s.dkHeads.shape) >= need && numelOf(s.dvHeads.shape) >= need;
}

function implicitScratchFor(gpu: Gpu, shape: AttentionShape): AttentionScratch {
  const c = implicitFor(gpu);
  if (c.scratch && fitsScratch(c.scratch, shape)) return c.scratch;
  const old = c.shape;
  if (c.scratch) for (const t of [c.scratch.rowStats, c.scratch.dkHeads, c.scratch.dvHeads]) if (t) c.retired.push(t);
  const grown: AttentionShape = old
    ? {
        ...shape,
        queries: Math.max(shape.queries, old.queries),
        keys: Math.max(shape.keys, old.keys),
        qHeads: Math.max(shape.qHeads, old.qHeads),
        headDim: Math.max(shape.headDim, old.headDim),
      }
    : shape;
  c.scratch = createAttentionScratch(gpu, grown, 'attention.implicit');
  c.shape = grown;
  return c.scratch;
}

/**
 * Frees the scratch the ops made for callers that passed none (call after the last recorder
 * that used attention has been submitted, e.g. when unloading a model).
 */
export function releaseAttentionCaches(gpu: Gpu): void {
  const c = implicit.get(gpu);
  if (!c) return;
  if (c.scratch) releaseAttentionScratch(gpu, c.scratch);
  for (const t of [...c.tensors.values(), ...c.retired]) releaseTensor(gpu, t);
  implicit.delete(gpu);
}

function shapeLabel(s: AttentionShape): string {
  const seg = s.segmentIds ? ` seg${describe(s.segmentIds)}` : '';
  const off = s.queryOffset ? ` offset=${s.queryOffset}` : '';
  const win = s.window ? ` window=${s.window}` : '';
  const cap = s.softcap ? ` softcap=${s.softcap}` : '';
  return `N=${s.queries} Nk=${s.keys} H=${s.qHeads}/${s.kvHeads} D=${s.headDim}${off}${win}${cap}${seg}`;
}

function checkShape(what: string, s: AttentionShape): void {
  const isInt = (v: number, min: number) => Number.isInteger(v) && v >= min;
  check(what, isInt(s.queries, 1) && isInt(s.keys, 1), 'queries and keys must be integers ≥ 1');
  check(
    what,
    isInt(s.qHeads, 1) && isInt(s.kvHeads, 1) && s.qHeads % s.kvHeads === 0,
    'qHeads must be a positive multiple of kvHeads',
  );
  check(
    what,
    isInt(s.headDim, 4) && s.headDim % 4 === 0,
    `headDim must be a multiple of 4 (kernels read vec4), got ${s.headDim}`,
  );
  const off = s.queryOffset ?? 0;
  check(what, isInt(off, 0), `queryOffset must be an integer ≥ 0, got ${off}`);
  check(
    what,
    off + s.queries <= s.keys,
    `queries at key positions ${off}..${off + s.queries - 1} need keys ≥ ${off + s.queries}, got ${s.keys}`,
  );
  check(what, Number.isFinite(scaleOf(s)), 'scale must be finite');
  const w = s.window ?? 0;
  check(what, isInt(w, 0), `window must be an integer ≥ 1 (or 0/null for none), got ${w}`);
  const cap = s.softcap ?? 0;
  check(what, Number.isFinite(cap) && cap >= 0, `softcap must be a finite number > 0 (or 0/null for none), got ${cap}`);
  checkOperands(what, [{ name: 'segmentIds', tensor: s.segmentIds, dtype: 'i32', min: s.keys }]);
}

function params(s: AttentionShape, tilesX: number, tiles: number, split = { splits: 1, keySplit: 0 }): ArrayBuffer {
  const scale = scaleOf(s);
  return new Params(16)
    .u32(s.queries)
    .u32(s.keys)
    .u32(s.qHeads)
    .u32(s.kvHeads)
    .u32(s.qHeads / s.kvHeads)
    .u32(s.queryOffset ?? 0)
    .u32(s.segmentIds ? 1 : 0)
    .u32(tilesX)
    .f32(scale * Math.LOG2E)
    .f32(scale)
    .u32(tiles)
    .u32(split.splits)
    .u32(split.keySplit)
    .u32(windowOf(s))
    .f32((s.softcap ?? 0) * Math.LOG2E)
    .u32(0).buffer;
}

const MAX_SPLITS = 32;
const MIN_BLOCKS_PER_SPLIT = 4;

/**
 * Key splits for the forward (flash-decoding): only when every row fits one workgroup, i.e. a
 * KV head would otherwise run on a single workgroup walking the whole cache (decode, tiny prefill).
 * With a sliding window the splits cover only the keys from the first query's window start.
 */
export function attentionForwardSplits(
  s: AttentionShape,
  rowsPerGroup: number,
  keyBlock: number,
): { splits: number; keySplit: number } {
  const rows = s.queries * (s.qHeads / s.kvHeads);
  const keyEnd = Math.min(s.keys, (s.queryOffset ?? 0) + s.queries);
  const span = keyEnd - firstWindowKey(s);
  const blocks = Math.ceil(span / keyBlock);
  if (rows > rowsPerGroup || blocks < 2 * MIN_BLOCKS_PER_SPLIT) return { splits: 1, keySplit: 0 };
  const want = Math.min(MAX_SPLITS, Math.floor(blocks / MIN_BLOCKS_PER_SPLIT));
  const keySplit = Math.ceil(blocks / want) * keyBlock;
  return { splits: Math.ceil(span / keySplit), keySplit };
}

/** Records O = softmax(scale·Q·Kᵀ + mask)·V and LSE. */
export async function attentionForward(rec: Recorder, a: AttentionForwardArgs): Promise<void> {
  const what = `attention.forward ${shapeLabel(a)} q${describe(a.q)} k${describe(a.k)} v${describe(a.v)} → out${describe(a.out)}`;
  checkShape(what, a);
  const { queries: N, keys: Nk, qHeads: Hq, kvHeads: Hkv, headDim: D } = a;
  checkOperands(what, [
    { name: 'q', tensor: a.q, dtype: 'f32', min: N * Hq * D },
    { name: 'k', tensor: a.k, dtype: 'f32', min: Nk * Hkv * D },
    { name: 'v', tensor: a.v, dtype: 'f32', min: Nk * Hkv * D },
    { name: 'segmentIds', tensor: a.segmentIds, dtype: 'i32' },
    { name: 'out', tensor: a.out, dtype: 'f32', min: N * Hq * D, write: true },
    { name: 'lse', tensor: a.lse, dtype: 'f32', min: Hq * N, write: true },
  ]);

  const gpu = rec.gpu;
  const tiling = tilingFor(gpu, D);
  const f = tiling.forward;
  const tiles = Math.ceil((N * (Hq / Hkv)) / f.rows);
  const [x, z] = foldGrid(rec, tiles);
  const part = f.lanes > 1 ? f.rows * f.lanes * f.keyBlock : 1;
  const pipeline = await gpu.pipelines.get('attention', {
    D4: D / 4,
    L: f.lanes,
    ROWS: f.rows,
    BC: f.keyBlock,
    PART: part,
  });
  const lse = a.lse ?? implicitTensor(gpu, 'lseSink', Hq * N);
  // Without segments the seg binding is never read; q stands in (both read-only).
  const seg = a.segmentIds ?? a.q;
  const split = attentionForwardSplits(a, f.rows, f.keyBlock);
  if (split.splits === 1) {
    rec.dispatch({ pipeline, what }, params(a, x, tiles), [a.q, a.k, a.v, seg, a.out, lse], [x, Hkv, z]);
    return;
  }
  const partO = implicitTensor(gpu, 'splitOut', split.splits * N * Hq * D);
  const partLse = implicitTensor(gpu, 'splitLse', split.splits * Hq * N);
  rec.dispatch(
    { pipeline, what: `${what} [${split.splits} key splits]` },
    params(a, x, tiles, split),
    [a.q, a.k, a.v, seg, partO, partLse],
    [x, Hkv * split.splits, z],
  );
  const combine = await gpu.pipelines.get(
    'attention',
    { D4: D / 4, L: f.lanes, ROWS: f.rows, BC: f.keyBlock, PART: part },
    'combine',
  );
  const cTiles = Math.ceil((N * Hq) / THREADS);
  const [cx, cz] = foldGrid(rec, cTiles);
  rec.dispatch(
    { pipeline: combine, what: `${what} [combine]` },
    params(a, cx, cTiles, split),
    [partO, partLse, a.out, lse],
    [cx, 1, cz],
  );
}

/** Records dQ, dK, dV (overwritten) from dO, the forward's O and LSE. */
export async function attentionBackward(rec: Recorder, a: AttentionBackwardArgs): Promise<void> {
  const what = `attention.backward ${shapeLabel(a)} q${describe(a.q)} k${describe(a.k)} v${describe(a.v)} dOut${describe(a.dOut)}`;
  checkShape(what, a);
  const { queries: N, keys: Nk, qHeads: Hq, kvHeads: Hkv, headDim: D } = a;
  const gpu = rec.gpu;
  const scratch = a.scratch ?? implicitScratchFor(gpu, a);
  check(
    what,
    fitsScratch(scratch, a),
    `scratch is too small for this shape (needs ${attentionScratchBytes(a)} bytes: rowStats [2, Hq, N]${Hq !== Hkv ? ' and dK/dV partials [Nk, Hq, D]' : ''})`,
  );
  const rowOperand = (name: string, tensor: Tensor, write = false): Operand => ({
    name,
    tensor,
    dtype: 'f32',
    min: N * Hq * D,
    write,
  });
  const keyOperand = (name: string, tensor: Tensor, write = false): Operand => ({
    name,
    tensor,
    dtype: 'f32',
    min: Nk * Hkv * D,
    write,
  });
  checkOperands(what, [
    rowOperand('q', a.q),
    rowOperand('out', a.out),
    rowOperand('dOut', a.dOut),
    rowOperand('dq', a.dq, true),
    keyOperand('k', a.k),
    keyOperand('v', a.v),
    keyOperand('dk', a.dk, true),
    keyOperand('dv', a.dv, true),
    { name: 'lse', tensor: a.lse, dtype: 'f32', min: Hq * N },
    { name: 'segmentIds', tensor: a.segmentIds, dtype: 'i32' },
    { name: 'scratch.rowStats', tensor: scratch.rowStats, dtype: 'f32', write: true },
    { name: 'scratch.dkHeads', tensor: scratch.dkHeads, dtype: 'f32' },
    { name: 'scratch.dvHeads', tensor: scratch.dvHeads, dtype: 'f32' },
  ]);

  const t = tilingFor(gpu, D);
  const constants = {
    D4: D / 4,
    L: t.dq.lanes,
    ROWS: t.dq.rows,
    BC: t.dq.keyBlock,
    PARTQ: t.dq.lanes > 1 ? t.dq.rows * t.dq.lanes * t.dq.keyBlock : 1,
    LK: t.dkdv.lanes,
    BK: t.dkdv.keys,
    BQ: t.dkdv.queryBlock,
    PARTK: t.dkdv.lanes > 1 ? t.dkdv.keys * t.dkdv.lanes * t.dkdv.queryBlock : 1,
  };
  const [pRowDot, pDq, pDkdv, pReduce] = await Promise.all(
    ['rowDot', 'dq', 'dkdv', 'reduceHeads'].map((entry) => gpu.pipelines.get('attention_backward', constants, entry)),
  );
  const seg = a.segmentIds ?? a.q;

  const rdTiles = Math.ceil((N * Hq) / THREADS);
  const [rdX, rdZ] = foldGrid(rec, rdTiles);
  rec.dispatch(
    { pipeline: pRowDot, what: `${what} [rowDot]` },
    params(a, rdX, rdTiles),
    [a.dOut, a.out, a.lse, scratch.rowStats],
    [rdX, 1, rdZ],
  );

  const dqTiles = Math.ceil((N * (Hq / Hkv)) / t.dq.rows);
  const [dqfX, dqfZ] = foldGrid(rec, dqTiles);
  rec.dispatch(
    { pipeline: pDq, what: `${what} [dq]` },
    params(a, dqfX, dqTiles),
    [a.q, a.k, a.v, seg, a.dOut, scratch.rowStats, a.dq],
    [dqfX, Hkv, dqfZ],
  );

  const grouped = Hq !== Hkv;
  const kTiles = Math.ceil(Nk / t.dkdv.keys);
  const [kfX, kfZ] = foldGrid(rec, kTiles);
  const dkTarget = grouped ? scratch.dkHeads! : a.dk;
  const dvTarget = grouped ? scratch.dvHeads! : a.dv;
  rec.dispatch(
    { pipeline: pDkdv, what: `${what} [dkdv]` },
    params(a, kfX, kTiles),
    [a.q, a.k, a.v, seg, a.dOut, scratch.rowStats, dkTarget, dvTarget],
    [kfX, Hq, kfZ],
  );
  if (grouped) {
    const redTiles = Math.ceil((Nk * Hkv * (D / 4)) / THREADS);
    const [rfX, rfZ] = foldGrid(rec, redTiles);
    rec.dispatch(
      { pipeline: pReduce, what: `${what} [reduceHeads]` },
      params(a, rfX, redTiles),
      [scratch.dkHeads!, scratch.dvHeads!, a.dk, a.dv],
      [rfX, 1, rfZ],
    );
  }
}

/**
 * Visible (query, key) pairs under the causal rule (and a sliding window, if any) without
 * segments: the work the kernels do.
 */
export function attentionPairs(queries: number, keys: number, queryOffset = 0, window: number | null = 0): number {
  let pairs = 0;
  for (let i = 0; i < queries; i++) {
    const seen = Math.min(keys, queryOffset + i + 1);
    pairs += window ? Math.min(seen, window) : seen;
  }
  return pairs;
}

/** Forward FLOPs: QKᵀ and PV over the visible pairs (2 + 2 per pair and dim) per query head. */
export function attentionForwardFlops(s: AttentionShape): number {
  return 4 * attentionPairs(s.queries, s.keys, s.queryOffset, s.window) * s.qHeads * s.headDim;
}

/**
 * Backward FLOPs by the FlashAttention convention (QKᵀ, dO·Vᵀ, Pᵀ·dO, dSᵀ·Q, dS·K: 10 per pair and
 * dim). The kernels recompute QKᵀ and dO·Vᵀ in both the dQ and the dK/dV pass, so they execute 14.
 */
export function attentionBackwardFlops(s: AttentionShape): number {
  return 10 * attentionPairs(s.queries, s.keys, s.queryOffset, s.window) * s.qHeads * s.headDim;
}
