// safetensors → GPU, one tensor at a time. 16-bit weights stay 16-bit; with `quantize: 'nf4'`
// every linear layer is quantized on the GPU right after upload (QLoRA); pre-quantized
// bitsandbytes 4-bit checkpoints (`*-bnb-4bit`) load directly (the QuantState layout of
// bitsandbytes/functional.py QuantState.as_dict / from_dict; see src/engine/ops/nf4.ts). Tensors
// larger than one storage binding are split by rows (embedding / lm_head only). Two memory
// options move the vocabulary-sized matrices: `head: 'nf4'` stores the output head as NF4 on the
// GPU (a tied embedding then stays in host memory for the input lookup), `embeddingOnHost` keeps an
// untied model's input embedding in host memory (only the batch's rows are uploaded).
import type { Gpu } from '../gpu/device.ts';
import { withErrorScopes } from '../gpu/errors.ts';
import { fmtBytes } from '../gpu/pool.ts';
import { Recorder } from '../gpu/recorder.ts';
import { storageBytes, type DType, type Tensor } from '../gpu/tensor.ts';
import { createTensor, releaseTensor, tensorSpec, uploadTensor, writeTensor } from '../gpu/transfer.ts';
import { fromF16 } from '../numeric/half.ts';
import { nf4FromBnb, quantizeNf4, releaseNf4, uploadNf4, type Nf4Weight, type RawTensor } from '../ops/nf4.ts';
import { SUPPORTED_ARCHITECTURES, checkWeights, computeInvFreq, expectedWeights, type ModelConfig } from './config.ts';
import { Model, type HostWeight, type RowSplitWeight } from './model.ts';
import { languageModelWeights, type WeightSource } from './weights.ts';

export interface LoadOptions {
  /** QLoRA: quantize every linear layer to NF4 on the GPU at load (blocksize 64). */
  quantize?: 'nf4';
  /** With quantize: bitsandbytes double quantization of the block scales. */
  doubleQuant?: boolean;
  /**
   * Output head as NF4 (blocksize 64, f32 block scales) instead of 16-bit: LoRA/QLoRA only, the
   * head is frozen there. With tied embeddings the 16-bit table stays in host memory for the input.
   */
  head?: 'nf4';
  /** Untied models: keep the input embedding in host memory, upload only each batch's rows. */
  embeddingOnHost?: boolean;
  /** 'f32' converts every weight to f32 (full fine-tuning trains f32 weights); default keeps the stored dtype. */
  computeDType?: 'f32' | 'stored';
  /** Override of the device's maxStorageBufferBindingSize (tests of the row split). */
  maxBindingBytes?: number;
  onProgress?: (p: { loaded: number; total: number; tensor: string; bytes: number }) => void;
  /** Stop loading (throws an AbortError-like Error). */
  signal?: AbortSignal;
}

const DTYPE_OF: Record<string, DType> = { F32: 'f32', BF16: 'bf16', F16: 'f16' };
const CHUNK = 32 << 20;

function isLinear(name: string): boolean {
  // Phi-3's fused qkv_proj / gate_up_proj are linear layers like the others.
  return /^model\.layers\.\d+\.(self_attn\.(q|k|v|o|qkv)_proj|mlp\.(gate|up|down|gate_up)_proj)\.weight$/.test(name);
}

export async function loadModel(
  gpu: Gpu,
  config: ModelConfig,
  source: WeightSource,
  opts: LoadOptions = {},
): Promise<Model> {
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(config.architecture)) {
    throw new Error(
      `unsupported architecture ${config.architecture}; supported: ${SUPPORTED_ARCHITECTURES.join(', ')}`,
    );
  }
  source = languageModelWeights(source);
  const available = new Map<string, number[]>();
  for (const n of source.names()) available.set(n, source.shape(n));
  const check = checkWeights(config, available);
  const fatal = [
    ...check.missing.map(
      (w) => `${fileFor(source, w.name)}: missing tensor "${w.name}" (expected shape [${w.shape.join(', ')}])`,
    ),
  ];
  for (const m of check.misshaped)
    fatal.push(
      `${source.fileOf(m.name)}: tensor "${m.name}" has shape [${m.actual.join(', ')}], config.json implies [${m.expected.join(', ')}]`,
    );
  if (fatal.length)
    throw new Error(`checkpoint does not match config.json (${config.architecture}):\n  ${fatal.join('\n  ')}`);

  const model = new Model(gpu, config);
  for (const u of check.unexpected) model.notes.push(`ignored unexpected tensor ${u}`);
  const limit = Math.min(opts.maxBindingBytes ?? Infinity, gpu.limits.maxStorageBufferBindingSize);
  const wanted = expectedWeights(config).filter((w) => !(w.optional && !source.has(w.name)));
  const quantized = new Set(check.quantized);
  if ((opts.head || opts.embeddingOnHost) && opts.computeDType === 'f32')
    throw new Error('an NF4 head or a host-memory embedding needs LoRA/QLoRA: full fine-tuning trains both matrices');
  const tied = config.tieWordEmbeddings;
  // Host copy of the embedding: the input lookup of an untied model, or of a tied one whose head is NF4.
  const embedOnHost = tied ? opts.head === 'nf4' : !!opts.embeddingOnHost;
  let loaded = 0;
  let loadedBytes = 0;
  try {
    // Gemma 3's sliding layers rotate with their own base (modeling_gemma3.py Gemma3RotaryEmbedding,
    // "sliding_attention": default RoPE at rope_local_base_freq); global layers use invFreq below.
    const localTheta = config.gemma?.ropeLocalTheta ?? null;
    if (localTheta !== null)
      model.invFreqLocal = uploadTensor(
        gpu,
        computeInvFreq({ ...config, ropeTheta: localTheta, rope: { type: 'default' } }),
        tensorSpec('f32', [config.headDim / 2], 'weights', 'rope.inv_freq.local'),
      );
    for (const w of wanted) {
      if (opts.signal?.aborted) throw new Error('model loading was cancelled');
      const name = w.name;
      // Allocation failures surface here, named, instead of as invalid buffers much later.
      const bytes = await withErrorScopes(
        gpu.device,
        `loading ${name} (${fmtBytes(loadedBytes)} of weights already on the GPU)`,
        async () => {
          let bytes = 0;
          if ((w.role === 'embed' && embedOnHost) || (w.role === 'lm-head' && !tied && opts.head === 'nf4')) {
            const host = await hostWeight(source, name, w.shape as [number, number]);
            if (w.role === 'embed') model.weights.set(name, host);
            else model.weights.set(name, await quantizeHead(gpu, host, limit));
            return host.bytes.byteLength;
          }
          if (quantized.has(name)) {
            if (opts.computeDType === 'f32')
              throw new Error(
                `${source.fileOf(name)}: "${name}" is 4-bit (bitsandbytes); full fine-tuning needs 16/32-bit weights`,
              );
            const companions: Record<string, RawTensor> = {};
            for (const n of source.names()) {
              if (n === name || n.startsWith(`${name}.`))
                companions[n] = { dtype: source.dtype(n), shape: source.shape(n), bytes: await source.read(n) };
            }
            const host = nf4FromBnb(companions, name.slice(0, -'.weight'.length), source.fileOf(name));
            host.shape = w.shape;
            model.weights.set(name, uploadNf4(gpu, host, name));
            bytes = host.packed.byteLength;
          } else {
            const dtype = source.dtype(name);
            const gpuType = DTYPE_OF[dtype];
            if (!gpuType)
              throw new Error(
                `${source.fileOf(name)}: tensor "${name}" has dtype ${dtype}; supported: F32, F16, BF16 (or bitsandbytes 4-bit)`,
              );
            const toF32 = opts.computeDType === 'f32' && gpuType !== 'f32';
            const dtypeOnGpu: DType = toF32 ? 'f32' : gpuType;
            const tooBig =
              storageBytes(
                dtypeOnGpu,
                w.shape.reduce((a, b) => a * b, 1),
              ) > limit;
            if (tooBig) {
              if (w.role !== 'embed' && w.role !== 'lm-head')
                throw new Error(
                  `${source.fileOf(name)}: tensor "${name}" exceeds this GPU's storage binding limit (${limit} bytes)`,
                );
              model.weights.set(
                name,
                await loadRowSplit(gpu, source, name, w.shape as [number, number], gpuType, toF32, limit),
              );
              model.notes.push(`${name} split by rows to fit the ${limit}-byte binding limit`);
            } else if (opts.quantize === 'nf4' && isLinear(name)) {
              const src = await loadDense(gpu, source, name, w.shape, gpuType, false, 'scratch');
              const rec = new Recorder(gpu, `quantize ${name}`);
              const { weight, scratch } = await quantizeNf4(rec, { src, doubleQuant: opts.doubleQuant, label: name });
              await rec.submit();
              releaseTensor(gpu, src);
              scratch.forEach((t) => releaseTensor(gpu, t));
              model.weights.set(name, weight);
            } else {
              model.weights.set(name, await loadDense(gpu, source, name, w.shape, gpuType, toF32, 'weights'));
            }
            bytes = storageBytes(
              gpuType,
              w.shape.reduce((a, b) => a * b, 1),
            );
            if (toF32) model.notes.push(`${name} converted ${dtype} → F32`);
          }
          return bytes;
        },
      );
      loadedBytes += bytes;
      loaded++;
      opts.onProgress?.({ loaded, total: wanted.length, tensor: name, bytes });
    }
    if (config.tieWordEmbeddings) {
      // Tied: lm_head IS the embedding (HF ties them even when the file stores both).
      const stored = model.weights.get('lm_head.weight');
      if (stored && stored !== model.weights.get('model.embed_tokens.weight')) {
        releaseAny(gpu, stored);
        model.notes.push('lm_head.weight stored in the checkpoint was replaced by the tied embedding');
      }
      const embed = model.get('model.embed_tokens.weight');
      if (opts.head === 'nf4') {
        model.weights.set('lm_head.weight', await quantizeHead(gpu, embed as HostWeight, limit));
        model.notes.push('the tied output head is NF4 on the GPU; the 16-bit embedding stays in host memory');
      } else model.weights.set('lm_head.weight', embed);
    } else if (opts.head === 'nf4') model.notes.push('lm_head.weight quantized to NF4');
    if (embedOnHost && !tied) model.notes.push('model.embed_tokens.weight kept in host memory');
    model.invFreq = uploadTensor(
      gpu,
      computeInvFreq(config),
      tensorSpec('f32', [config.rotaryDim / 2], 'weights', 'rope.inv_freq'),
    );
  } catch (e) {
    model.release();
    throw e;
  }
  return model;
}

/** A tensor that is absent lives in no file: name the checkpoint's file(s) instead. */
function fileFor(source: WeightSource, _name: string): string {
  const files = [...new Set(source.names().map((n) => source.fileOf(n)))];
  if (!files.length) return 'checkpoint (no tensors)';
  return files.length === 1 ? files[0] : `checkpoint (${files.length} shards: ${files.join(', ')})`;
}

function releaseAny(gpu: Gpu, w: unknown): void {
  const t = w as Tensor;
  if (t && 'buf' in t) releaseTensor(gpu, t);
  else if (t && (t as unknown as Nf4Weight).kind === 'nf4') releaseNf4(gpu, t as unknown as Nf4Weight);
}

async function hostWeight(source: WeightSource, name: string, shape: [number, number]): Promise<HostWeight> {
  const dtype = DTYPE_OF[source.dtype(name)];
  if (!dtype)
    throw new Error(
      `${source.fileOf(name)}: tensor "${name}" has dtype ${source.dtype(name)}; supported: F32, F16, BF16`,
    );
  const bytes = await source.read(name);
  const expect = storageBytes(dtype, shape[0] * shape[1]);
  if (Math.ceil(bytes.byteLength / 4) * 4 !== expect)
    throw new Error(`${source.fileOf(name)}: tensor "${name}" gave ${bytes.byteLength} bytes, expected ${expect}`);
  // A private, aligned copy: the gather views it as 16/32-bit rows.
  return { kind: 'host', shape, dtype: dtype as HostWeight['dtype'], bytes: new Uint8Array(bytes), label: name };
}

/**
 * NF4 output head from host bytes, quantized on the GPU in row chunks that each fit one binding
 * (a 7B head is larger than one): each chunk's codes and block scales are copied into place.
 * Block scales stay f32 (bitsandbytes' double quantization takes the mean over all blocks, which
 * a chunk does not see); at 0.5 + 1/16 byte per weight.
 */
async function quantizeHead(gpu: Gpu, host: HostWeight, limit: number): Promise<Nf4Weight> {
  const [V, H] = host.shape;
  const blocksize = 64;
  const label = host.label.replace('model.embed_tokens.weight', 'lm_head.weight');
  // Chunks start on a block boundary and on a whole u32 word of codes.
  const rowQuantum = blocksize / gcd(H, blocksize);
  if ((V * H) % 8) throw new Error(`${label}: an NF4 head needs vocab × hidden divisible by 8, got ${V} × ${H}`);
  const elem = host.dtype === 'f32' ? 4 : 2;
  const rowsPer = Math.max(rowQuantum, Math.floor(Math.min(limit, 256 << 20) / (H * elem) / rowQuantum) * rowQuantum);
  const nBlocks = Math.ceil((V * H) / blocksize);
  const packed = createTensor(gpu, tensorSpec('nf4', [V, H], 'weights', `${label}.nf4`));
  const absmax = createTensor(gpu, tensorSpec('f32', [nBlocks], 'weights', `${label}.absmax`));
  try {
    for (let r0 = 0; r0 < V; r0 += rowsPer) {
      const rows = Math.min(rowsPer, V - r0);
      const rowBytes = H * elem;
      const src = uploadTensor(
        gpu,
        host.dtype === 'f32'
          ? new Float32Array(host.bytes.buffer, host.bytes.byteOffset + r0 * rowBytes, rows * H)
          : new Uint16Array(host.bytes.buffer, host.bytes.byteOffset + r0 * rowBytes, rows * H),
        tensorSpec(host.dtype, [rows, H], 'scratch', `${label}[${r0}:${r0 + rows}]`),
      );
      const rec = new Recorder(gpu, `quantize ${label}`);
      const { weight, scratch } = await quantizeNf4(rec, { src, label, category: 'scratch' });
      const e0 = r0 * H;
      rec.copy(weight.packed, 0, packed, e0 / 2, Math.ceil((rows * H) / 8) * 4);
      rec.copy(weight.absmax, 0, absmax, (e0 / blocksize) * 4, Math.ceil((rows * H) / blocksize) * 4);
      await rec.submit();
      releaseTensor(gpu, src);
      releaseNf4(gpu, weight);
      scratch.forEach((t) => releaseTensor(gpu, t));
    }
  } catch (e) {
    releaseTensor(gpu, packed);
    releaseTensor(gpu, absmax);
    throw e;
  }
  return { kind: 'nf4', shape: [V, H], blocksize, packed, absmax, dtype: TORCH_NAME[host.dtype], label };
}

const TORCH_NAME = { f32: 'float32', bf16: 'bfloat16', f16: 'float16' } as const;

function gcd(a: number, b: number): number {
  return b ? gcd(b, a % b) : a;
}

/** Host bytes of `gpuType` → f32 bytes. */
function widen(bytes: Uint8Array, from: DType): Uint8Array {
  const n = bytes.byteLength / 2;
  const u16 =
    bytes.byteOffset % 2 === 0
      ? new Uint16Array(bytes.buffer, bytes.byteOffset, n)
      : new Uint16Array(new Uint8Array(bytes).buffer, 0, n);
  if (from === 'f16') return new Uint8Array(fromF16(u16).buffer);
  const u32 = new Uint32Array(n);
  for (let i = 0; i < n; i++) u32[i] = u16[i] << 16;
  return new Uint8Array(u32.buffer);
}

async function* pieces(source: WeightSource, name: string): AsyncGenerator<Uint8Array> {
  if (source.chunks) yield* source.chunks(name, CHUNK);
  else yield await source.read(name);
}

/** Streams a tensor's chunks into a writer at 4-byte aligned offsets (writeBuffer needs them). */
async function stream(
  source: WeightSource,
  name: string,
  toF32: boolean,
  from: DType,
  write: (bytes: Uint8Array, at: number) => void,
): Promise<number> {
  let at = 0;
  let carry = new Uint8Array(0);
  for await (let chunk of pieces(source, name)) {
    if (toF32) chunk = widen(chunk, from);
    if (carry.byteLength) {
      const joined = new Uint8Array(carry.byteLength + chunk.byteLength);
      joined.set(carry);
      joined.set(chunk, carry.byteLength);
      chunk = joined;
    }
    const whole = chunk.byteLength - (chunk.byteLength % 4);
    if (whole) write(chunk.subarray(0, whole), at);
    at += whole;
    carry = chunk.slice(whole);
  }
  if (carry.byteLength) {
    write(carry, at);
    at += carry.byteLength;
  }
  return at;
}

async function loadDense(
  gpu: Gpu,
  source: WeightSource,
  name: string,
  shape: number[],
  from: DType,
  toF32: boolean,
  category: 'weights' | 'scratch',
): Promise<Tensor> {
  const t = createTensor(gpu, tensorSpec(toF32 ? 'f32' : from, shape, category, name));
  try {
    const expect = storageBytes(
      toF32 ? 'f32' : from,
      shape.reduce((a, b) => a * b, 1),
    );
    const got = await stream(source, name, toF32, from, (bytes, at) => writeTensor(gpu, t, bytes, at));
    if (Math.ceil(got / 4) * 4 !== expect)
      throw new Error(`${source.fileOf(name)}: tensor "${name}" gave ${got} bytes, expected ${expect}`);
  } catch (e) {
    releaseTensor(gpu, t);
    throw e;
  }
  return t;
}

async function loadRowSplit(
  gpu: Gpu,
  source: WeightSource,
  name: string,
  shape: [number, number],
  from: DType,
  toF32: boolean,
  limit: number,
): Promise<RowSplitWeight> {
  const dtype: DType = toF32 ? 'f32' : from;
  const rowBytes = storageBytes(dtype, shape[1]);
  if (rowBytes % 4 || shape[1] % 2) throw new Error(`${name}: cannot split rows of odd width ${shape[1]}`);
  const rowsPer = Math.max(1, Math.floor(limit / rowBytes));
  const parts: { tensor: Tensor; row0: number; rows: number }[] = [];
  for (let r0 = 0; r0 < shape[0]; r0 += rowsPer) {
    const rows = Math.min(rowsPer, shape[0] - r0);
    parts.push({
      tensor: createTensor(gpu, tensorSpec(dtype, [rows, shape[1]], 'weights', `${name}[${r0}:${r0 + rows}]`)),
      row0: r0,
      rows,
    });
  }
  const partBytes = rowsPer * rowBytes;
  await stream(source, name, toF32, from, (bytes, at) => {
    // A piece may straddle parts: cut it at part boundaries.
    let off = 0;
    while (off < bytes.byteLength) {
      const abs = at + off;
      const p = Math.floor(abs / partBytes);
      const inPart = abs - p * partBytes;
      const n = Math.min(bytes.byteLength - off, partBytes - inPart);
      writeTensor(gpu, parts[p].tensor, bytes.subarray(off, off + n), inPart);
      off += n;
    }
  });
  return { kind: 'rows', shape, dtype, parts, label: name };
}
