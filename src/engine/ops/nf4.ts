// NF4 (QLoRA 4-bit NormalFloat) weights, bit-compatible with bitsandbytes
// (bitsandbytes/functional.py quantize_4bit, dequantize_4bit, create_dynamic_map, QuantState;
// csrc/kernels.cu kQuantizeBlockwise / dQuantizeNF4 / dQuantize). See shaders/nf4.wgsl.
import type { Gpu } from '../gpu/device.ts';
import { GpuError } from '../gpu/errors.ts';
import type { MemoryCategory } from '../gpu/ledger.ts';
import { Params, type Recorder } from '../gpu/recorder.ts';
import type { ShaderConstants } from '../gpu/shader-library.ts';
import { describe, numelOf, type DType, type Tensor } from '../gpu/tensor.ts';
import { createTensor, tensorSpec, uploadTensor, writeTensor } from '../gpu/transfer.ts';
import { check, checkDType, checkOperands, launch, threadGrid, WEIGHT_DTYPES, weightKind } from './kernel.ts';

/** The 16 NF4 values (index 0..15 ascending), as the f32 bit patterns bitsandbytes' table rounds to. */
export const NF4_CODE = new Float32Array(
  new Uint32Array([
    0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d, 0xbe3d353f, 0xbdba7871, 0x00000000, 0x3da2faff,
    0x3e24cae3, 0x3e7c04dd, 0x3ead033a, 0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3, 0x3f800000,
  ]).buffer,
);

/**
 * GPU NF4 weight of logical shape `shape` (row-major, flattened for blocking like bitsandbytes).
 * - `packed`: dtype nf4, the bitsandbytes byte stream (element 2j in the high nibble of byte j)
 *   uploaded byte for byte, so byte j is byte j%4 of u32 word j/4.
 * - `absmax`: f32 [nBlocks]; or, when `nested`, u8 [nBlocks] codes of the double quantization.
 * - `nested.table`: f32 [256 + 1 + nNested] = [code8[0..255], offset, nestedAbsmax[0..nNested)].
 *   The matmul decodes the block scale per element from it (8 bits per block kept in memory instead
 *   of 32: 0.125 vs 0.5 bit per weight; for Qwen2.5-7B ≈ 100 MB instead of 400 MB).
 */
export interface Nf4Weight {
  readonly kind: 'nf4';
  readonly shape: readonly number[];
  readonly blocksize: number;
  readonly packed: Tensor;
  readonly absmax: Tensor;
  readonly nested?: { readonly blocksize: number; readonly table: Tensor };
  /** Original dtype recorded in the bitsandbytes quant state ("bfloat16", "float16", "float32"). */
  readonly dtype: string;
  readonly label: string;
}

export function isNf4(w: unknown): w is Nf4Weight {
  return typeof w === 'object' && w !== null && (w as { kind?: unknown }).kind === 'nf4';
}

export function nf4Numel(w: Nf4Weight): number {
  return numelOf(w.shape);
}

export function nf4Describe(w: Nf4Weight): string {
  return `${w.label}[${w.shape.join('×')}:nf4/${w.blocksize}${w.nested ? '+dq' : ''}]`;
}

/** Shader constants and bindings (2, 4, 5) for the `weight_nf4` decoder of a kernel. */
export function nf4DecoderConstants(w: Nf4Weight): ShaderConstants {
  const c: Record<string, string | number> = {
    NF4_BLOCK: `${w.blocksize}u`,
    NF4_ABSMAX: w.nested ? 'nf4_absmax_dq' : 'nf4_absmax_f32',
  };
  if (w.nested) c.NESTED_BLOCK = `${w.nested.blocksize}u`;
  return c;
}

/** Buffers after the decoder's binding 2 (packed): binding 4 = absmax, 5 = nested table. */
export function nf4ExtraBindings(w: Nf4Weight): Tensor[] {
  return w.nested ? [w.absmax, w.nested.table] : [w.absmax];
}

export function checkBlocksize(blocksize: number, what: string): void {
  if (!Number.isInteger(blocksize) || blocksize < 32 || blocksize > 4096 || (blocksize & (blocksize - 1)) !== 0) {
    throw new GpuError('validation', what, `NF4 blocksize must be a power of two in 32..4096, got ${blocksize}`);
  }
}

/**
 * bitsandbytes' `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`, the code of
 * the double-quantized absmax, computed in f32 like PyTorch: linspace as its current CPU kernel
 * does it (start + step·i below the halfway point, end − step·(steps−1−i) above; PyTorch 1.13's
 * vectorised linspace differs by one ulp in some entries), means (b[i]+b[i+1])/2, scaled by
 * f32(10^(i−6)). Sorted ascending: code8[0] ≈ −0.993, code8[127] = 0, code8[255] = 1.
 */
export function dynamicMap8(): Float32Array {
  const f = Math.fround;
  const maxExp = 7;
  const data: number[] = [];
  for (let i = 0; i < maxExp; i++) {
    const steps = 2 ** i + 1;
    const start = f(0.1);
    const end = 1;
    const step = f(f(end - start) / (steps - 1));
    const half = Math.floor(steps / 2);
    const b: number[] = [];
    for (let k = 0; k < steps; k++) b.push(k < half ? f(start + f(step * k)) : f(end - f(step * (steps - k - 1))));
    const scale = f(10 ** (i - (maxExp - 1)));
    for (let k = 0; k + 1 < steps; k++) {
      const mean = f(f(b[k] + b[k + 1]) / 2);
      data.push(f(scale * mean), f(-scale * mean));
    }
  }
  data.push(0, 1);
  data.sort((x, y) => x - y);
  return new Float32Array(data);
}

/** Host copy of an NF4 weight (what a bitsandbytes checkpoint holds, or a readback). */
export interface Nf4Host {
  shape: number[];
  blocksize: number;
  dtype: string;
  /** ceil(numel/2) bytes, bitsandbytes order. */
  packed: Uint8Array;
  /** f32 block scales, or u8 codes when nested. */
  absmax: Float32Array | Uint8Array;
  nested?: { blocksize: number; offset: number; code: Float32Array; absmax: Float32Array };
}

export function uploadNf4(gpu: Gpu, host: Nf4Host, label: string, category: MemoryCategory = 'weights'): Nf4Weight {
  const numel = numelOf(host.shape);
  const nBlocks = Math.ceil(numel / host.blocksize);
  checkBlocksize(host.blocksize, label);
  if (host.packed.length !== Math.ceil(numel / 2) || host.absmax.length !== nBlocks) {
    throw new GpuError(
      'validation',
      label,
      `NF4 ${host.shape.join('×')}/${host.blocksize} needs ${Math.ceil(numel / 2)} bytes and ${nBlocks} scales, got ${host.packed.length} and ${host.absmax.length}`,
    );
  }
  const packed = uploadTensor(gpu, host.packed, tensorSpec('nf4', host.shape, category, `${label}.nf4`));
  if (!host.nested) {
    if (!(host.absmax instanceof Float32Array))
      throw new GpuError('validation', label, 'absmax must be f32 without double quantization');
    const absmax = uploadTensor(gpu, host.absmax, tensorSpec('f32', [nBlocks], category, `${label}.absmax`));
    return { kind: 'nf4', shape: [...host.shape], blocksize: host.blocksize, packed, absmax, dtype: host.dtype, label };
  }
  const n = host.nested;
  if (!(host.absmax instanceof Uint8Array))
    throw new GpuError('validation', label, 'absmax must be u8 codes with double quantization');
  const table = new Float32Array(257 + n.absmax.length);
  table.set(n.code, 0);
  table[256] = n.offset;
  table.set(n.absmax, 257);
  const absmax = uploadTensor(gpu, host.absmax, tensorSpec('u8', [nBlocks], category, `${label}.absmax_q`));
  const tableT = uploadTensor(gpu, table, tensorSpec('f32', [table.length], category, `${label}.absmax_table`));
  return {
    kind: 'nf4',
    shape: [...host.shape],
    blocksize: host.blocksize,
    packed,
    absmax,
    nested: { blocksize: n.blocksize, table: tableT },
    dtype: host.dtype,
    label,
  };
}

export function releaseNf4(gpu: Gpu, w: Nf4Weight): void {
  gpu.pool.release(w.packed.buf);
  gpu.pool.release(w.absmax.buf);
  if (w.nested) gpu.pool.release(w.nested.table.buf);
}

/** Threads per workgroup of every shaders/nf4.wgsl entry point. */
const WG = 64;
/** Blocks per nested absmax block of the double quantization (bitsandbytes' compress_statistics uses 256). */
const NESTED_BLOCK = 256;

export interface QuantizeNf4Args {
  /** f32, bf16 or f16 weight, row-major, flattened for blocking. */
  src: Tensor;
  /** Logical shape recorded in the result (defaults to src.shape). */
  shape?: readonly number[];
  blocksize?: number;
  /** bitsandbytes compress_statistics (QLoRA's double quantization, nested blocks of 256). */
  doubleQuant?: boolean;
  label?: string;
  category?: MemoryCategory;
}

/**
 * Records the quantization of `src` into a new NF4 weight (no CPU round trip). With double quant
 * the f32 block scales are an intermediate: release the returned `scratch` after `rec.submit()`.
 */
export async function quantizeNf4(
  rec: Recorder,
  args: QuantizeNf4Args,
): Promise<{ weight: Nf4Weight; scratch: Tensor[] }> {
  const { src } = args;
  const gpu = rec.gpu;
  const shape = args.shape ?? src.shape;
  const blocksize = args.blocksize ?? 64;
  const label = args.label ?? src.label;
  const category = args.category ?? 'weights';
  const numel = numelOf(shape);
  const what = `nf4.quantize ${describe(src)} → ${shape.join('×')}/${blocksize}${args.doubleQuant ? '+dq' : ''}`;
  checkBlocksize(blocksize, what);
  checkDType(what, 'source', src, ...WEIGHT_DTYPES);
  check(what, numel === numelOf(src.shape) && numel > 0, `shape ${shape.join('×')} does not match the source`);
  const nBlocks = Math.ceil(numel / blocksize);
  const nNested = Math.ceil(nBlocks / NESTED_BLOCK);
  const constants = {
    SRC_KIND: `${weightKind(what, 'source', src)}u`,
    NF4_BLOCK: `${blocksize}u`,
    NF4_ABSMAX: 'nf4_absmax_f32',
  };
  const params = new Params(8)
    .u32(numel)
    .u32(nBlocks)
    .u32(nNested)
    .u32(0)
    .f32(Math.fround(1 / nBlocks))
    .u32(NESTED_BLOCK)
    .u32(0)
    .u32(0).buffer;
  const step = (entry: string, suffix: string, bindings: Tensor[], threads: number) =>
    launch(rec, {
      shader: 'nf4',
      entry,
      constants,
      what: `${what}${suffix}`,
      params,
      bindings,
      grid: threadGrid(rec, threads, WG),
    });

  const absmaxF32 = createTensor(
    gpu,
    tensorSpec('f32', [nBlocks], args.doubleQuant ? 'scratch' : category, `${label}.absmax`),
  );
  const packed = createTensor(gpu, tensorSpec('nf4', shape, category, `${label}.nf4`));
  await step('absmax', ' absmax', [src, absmaxF32], nBlocks);
  await step('quantize', '', [src, absmaxF32, packed], Math.ceil(numel / 8));
  const base = { kind: 'nf4', shape: [...shape], blocksize, packed, dtype: dtypeName(src.dtype), label } as const;
  if (!args.doubleQuant) return { weight: { ...base, absmax: absmaxF32 }, scratch: [] };
  const table = createTensor(gpu, tensorSpec('f32', [257 + nNested], category, `${label}.absmax_table`));
  writeTensor(gpu, table, dynamicMap8());
  const codes = createTensor(gpu, tensorSpec('u8', [nBlocks], category, `${label}.absmax_q`));
  await step('dq_offset', ' offset', [absmaxF32, table], 1);
  await step('dq_nested', ' nested absmax', [absmaxF32, table], nNested);
  await step('dq_quantize', ' absmax codes', [absmaxF32, table, codes], Math.ceil(nBlocks / 4));
  return { weight: { ...base, absmax: codes, nested: { blocksize: NESTED_BLOCK, table } }, scratch: [absmaxF32] };
}

function dtypeName(d: DType): string {
  return d === 'bf16' ? 'bfloat16' : d === 'f16' ? 'float16' : 'float32';
}

/**
 * Records out = dequant(w) as f32 [numel]; `absmaxOut` (f32 [nBlocks]) receives the decoded block
 * scales (with double quant: code8[q]·nested + offset), useful to expand them once if wanted.
 */
export async function dequantizeNf4(rec: Recorder, w: Nf4Weight, out: Tensor, absmaxOut: Tensor): Promise<void> {
  const numel = nf4Numel(w);
  const nBlocks = Math.ceil(numel / w.blocksize);
  const what = `nf4.dequantize ${nf4Describe(w)} → ${describe(out)}`;
  checkOperands(
    what,
    [
      { name: 'output', tensor: out, dtype: 'f32', min: numel, write: true },
      { name: 'absmax output', tensor: absmaxOut, dtype: 'f32', min: nBlocks, write: true },
    ],
    'requirement',
  );
  const params = new Params(8)
    .u32(numel)
    .u32(nBlocks)
    .u32(0)
    .u32(0)
    .f32(0)
    .u32(w.nested?.blocksize ?? NESTED_BLOCK)
    .u32(0)
    .u32(0);
  await launch(rec, {
    shader: 'nf4',
    entry: 'dequantize',
    constants: { SRC_KIND: '0u', ...nf4DecoderConstants(w) },
    what,
    params,
    bindings: [out, w.packed, absmaxOut, ...nf4ExtraBindings(w)],
    grid: threadGrid(rec, Math.ceil(numel / 8), WG),
  });
}

/** One raw tensor of a checkpoint: safetensors dtype name ("U8", "F32", ...), shape, little-endian bytes. */
export interface RawTensor {
  dtype: string;
  shape: readonly number[];
  bytes: Uint8Array;
}

/**
 * Reads module `module`'s pre-quantized bitsandbytes NF4 weight (the layout of `*-bnb-4bit`
 * checkpoints, bitsandbytes QuantState.as_dict(packed=True)): `M.weight` (u8 packed),
 * `M.weight.absmax` (f32, or u8 when nested), `M.weight.quant_map` (f32[16]), `M.weight.nested_absmax`,
 * `M.weight.nested_quant_map` (f32[256]) and `M.weight.quant_state.bitsandbytes__nf4` (JSON bytes).
 * Pure: no GPU; pass the result to uploadNf4. Errors name the tensor and the reason.
 */
export function nf4FromBnb(tensors: Readonly<Record<string, RawTensor>>, module: string, file = 'checkpoint'): Nf4Host {
  const key = `${module}.weight`;
  const fail = (name: string, why: string): never => {
    throw new Error(`${file}: ${name}: ${why}`);
  };
  const get = (suffix: string): RawTensor =>
    tensors[`${key}${suffix}`] ?? fail(`${key}${suffix}`, 'missing (expected in a bitsandbytes 4-bit checkpoint)');
  if (tensors[`${key}.quant_state.bitsandbytes__fp4`]) fail(key, 'quantized as FP4; only NF4 is supported');
  const stateName = `${key}.quant_state.bitsandbytes__nf4`;
  const stateRaw = get('.quant_state.bitsandbytes__nf4');
  let state: Record<string, unknown>;
  try {
    state = JSON.parse(new TextDecoder().decode(stateRaw.bytes)) as Record<string, unknown>;
  } catch (e) {
    return fail(stateName, `quant state is not JSON (${(e as Error).message})`);
  }
  if (state.quant_type !== 'nf4') fail(stateName, `quant_type is ${JSON.stringify(state.quant_type)}, expected "nf4"`);
  const blocksize = state.blocksize;
  if (typeof blocksize !== 'number') return fail(stateName, 'blocksize missing');
  try {
    checkBlocksize(blocksize, stateName);
  } catch (e) {
    fail(stateName, (e as Error).message);
  }
  const shape = state.shape;
  if (!Array.isArray(shape) || shape.length === 0 || !shape.every((d) => Number.isInteger(d) && d > 0))
    return fail(stateName, `bad shape ${JSON.stringify(shape)}`);
  const numel = numelOf(shape as number[]);
  const nBlocks = Math.ceil(numel / blocksize);

  const weight = get('');
  expectTensor(weight, key, 'U8', Math.ceil(numel / 2), fail);
  const quantMap = f32s(get('.quant_map'), `${key}.quant_map`, 16, fail);
  for (let i = 0; i < 16; i++) {
    if (quantMap[i] !== NF4_CODE[i])
      fail(`${key}.quant_map`, `entry ${i} is ${quantMap[i]}, not the NF4 value ${NF4_CODE[i]}`);
  }
  const host: Nf4Host = {
    shape: shape as number[],
    blocksize,
    dtype: String(state.dtype ?? 'bfloat16'),
    packed: weight.bytes,
    absmax: new Float32Array(0),
  };
  const nested = tensors[`${key}.nested_absmax`] !== undefined || state.nested_offset !== undefined;
  if (!nested) {
    host.absmax = f32s(get('.absmax'), `${key}.absmax`, nBlocks, fail);
    return host;
  }
  const nestedBlock = state.nested_blocksize;
  const offset = state.nested_offset;
  if (typeof nestedBlock !== 'number' || !Number.isInteger(nestedBlock) || nestedBlock < 1)
    return fail(stateName, `bad nested_blocksize ${JSON.stringify(nestedBlock)}`);
  if (typeof offset !== 'number' || !Number.isFinite(offset))
    return fail(stateName, `bad nested_offset ${JSON.stringify(offset)}`);
  if (state.nested_dtype !== undefined && state.nested_dtype !== 'float32')
    fail(stateName, `nested_dtype ${JSON.stringify(state.nested_dtype)} unsupported (float32 expected)`);
  const codes = get('.absmax');
  expectTensor(codes, `${key}.absmax`, 'U8', nBlocks, fail);
  host.absmax = codes.bytes;
  host.nested = {
    blocksize: nestedBlock,
    offset: Math.fround(offset),
    code: f32s(get('.nested_quant_map'), `${key}.nested_quant_map`, 256, fail),
    absmax: f32s(get('.nested_absmax'), `${key}.nested_absmax`, Math.ceil(nBlocks / nestedBlock), fail),
  };
  return host;
}

function expectTensor(
  t: RawTensor,
  name: string,
  dtype: string,
  count: number,
  fail: (n: string, w: string) => never,
): void {
  if (t.dtype.toUpperCase() !== dtype) fail(name, `dtype ${t.dtype}, expected ${dtype}`);
  const width = dtype === 'F32' ? 4 : 1;
  if (numelOf(t.shape) !== count || t.bytes.length !== count * width) {
    fail(
      name,
      `holds ${numelOf(t.shape)} elements (${t.bytes.length} bytes, shape [${t.shape.join(', ')}]), expected ${count}`,
    );
  }
}

function f32s(t: RawTensor, name: string, count: number, fail: (n: string, w: string) => never): Float32Array {
  expectTensor(t, name, 'F32', count, fail);
  // Copy: checkpoint slices need not be 4-byte aligned. new Uint8Array(x), not x.slice(): a Node
  // Buffer's slice() is a view into its (shared) pool.
  return new Float32Array(new Uint8Array(t.bytes).buffer, 0, count);
}
