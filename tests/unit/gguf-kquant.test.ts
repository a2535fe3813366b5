// Q4_K / Q6_K / Q5_0 blocks: (a) byte for byte what libggml's own reference quantizers write
// (quantize_row_*_ref from the llama.cpp oracle's libggml-base.so, called through Python ctypes);
// (b) a dequantizer written here from the block layouts (ggml-common.h) reads our blocks back within
// the bounds each format allows, and reads ggml's blocks like ggml's own dequantize_row_*.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { quantizeQ4_K, quantizeQ5_0, quantizeQ6_K } from '../../src/engine/export/gguf-kquant.ts';
import { quantizeQ8_0 } from '../../src/engine/export/gguf-quant.ts';
import { checkGgufType, q4KMTensorType, useMoreBits } from '../../src/engine/export/gguf.ts';
import { f16BitsToF32 } from '../../src/engine/numeric/half.ts';
import { randn, rng, uniform } from '../cpu/random.ts';

const LIBGGML = resolve('.cache/llama-oracle/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so');

type Kind = 'q4_K' | 'q6_K' | 'q5_0' | 'q8_0';
const BLOCK: Record<Kind, { n: number; bytes: number }> = {
  q4_K: { n: 256, bytes: 144 },
  q6_K: { n: 256, bytes: 210 },
  q5_0: { n: 32, bytes: 22 },
  q8_0: { n: 32, bytes: 34 },
};
const OURS: Record<Kind, (x: Float32Array) => Uint8Array> = {
  q4_K: quantizeQ4_K,
  q6_K: quantizeQ6_K,
  q5_0: quantizeQ5_0,
  q8_0: quantizeQ8_0,
};

const PY = `
import ctypes, sys, numpy as np
lib = ctypes.CDLL(sys.argv[1]); kind = sys.argv[2]; src = sys.argv[3]
x = np.fromfile(src, dtype=np.float32)
nbytes = {'q4_K': 144, 'q6_K': 210, 'q5_0': 22, 'q8_0': 34}[kind]
nblock = {'q4_K': 256, 'q6_K': 256, 'q5_0': 32, 'q8_0': 32}[kind]
q = np.zeros(len(x) // nblock * nbytes, dtype=np.uint8)
p = lambda a: a.ctypes.data_as(ctypes.c_void_p)
getattr(lib, 'quantize_row_%s_ref' % kind)(p(x), p(q), ctypes.c_int64(len(x)))
y = np.zeros(len(x), dtype=np.float32)
getattr(lib, 'dequantize_row_%s' % kind)(p(q), p(y), ctypes.c_int64(len(x)))
q.tofile(src + '.q'); y.tofile(src + '.deq')
`;

/** libggml's quantized bytes and its own dequantization of them. */
function ggml(kind: Kind, x: Float32Array): { q: Uint8Array; deq: Float32Array } {
  const dir = mkdtempSync(join(tmpdir(), 'ggml-'));
  try {
    const src = join(dir, 'x.f32');
    writeFileSync(src, new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
    execFileSync('/usr/bin/python3', ['-c', PY, LIBGGML, kind, src]);
    const q = new Uint8Array(readFileSync(src + '.q'));
    const d = readFileSync(src + '.deq');
    return { q, deq: new Float32Array(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength)) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const h = (b: Uint8Array, at: number) => f16BitsToF32(b[at] | (b[at + 1] << 8));

/** Dequantizers written from the block layouts, independent of the writer. */
function dequant(kind: Kind, q: Uint8Array): Float32Array {
  const { n, bytes } = BLOCK[kind];
  const nb = q.length / bytes;
  const y = new Float32Array(nb * n);
  for (let b = 0; b < nb; b++) {
    const o = b * bytes;
    const out = y.subarray(b * n, (b + 1) * n);
    if (kind === 'q8_0') {
      const d = h(q, o);
      for (let i = 0; i < 32; i++) out[i] = d * ((q[o + 2 + i] << 24) >> 24);
    } else if (kind === 'q5_0') {
      const d = h(q, o);
      const qh = (q[o + 2] | (q[o + 3] << 8) | (q[o + 4] << 16) | (q[o + 5] << 24)) >>> 0;
      for (let i = 0; i < 32; i++) {
        const nib = i < 16 ? q[o + 6 + i] & 0xf : q[o + 6 + i - 16] >> 4;
        out[i] = d * ((nib | (((qh >>> i) & 1) << 4)) - 16);
      }
    } else if (kind === 'q4_K') {
      // 8 sub-blocks of 32: 6-bit scale s_j and min m_j; bytes 0-3 hold s_0..3 (low 6 bits) and the
      // top 2 bits of s_4..7, bytes 4-7 the same for mins, bytes 8-11 the low nibbles of s_4..7 | m_4..7.
      const d = h(q, o);
      const dmin = h(q, o + 2);
      const sc = q.subarray(o + 4, o + 16);
      for (let j = 0; j < 8; j++) {
        const s = j < 4 ? sc[j] & 63 : (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4);
        const m = j < 4 ? sc[j + 4] & 63 : (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
        // Sub-blocks 2k and 2k+1 share 32 bytes: low nibbles then high nibbles.
        const qs = q.subarray(o + 16 + 32 * (j >> 1), o + 16 + 32 * (j >> 1) + 32);
        for (let i = 0; i < 32; i++) {
          const v = j & 1 ? qs[i] >> 4 : qs[i] & 15;
          out[32 * j + i] = Math.fround(Math.fround(d * s) * v) - Math.fround(dmin * m);
        }
      }
    } else {
      // q6_K: value i in half k = i >> 7, position r = i & 127: quarter t = r >> 5, lane l = r & 31;
      // low 4 bits in ql[64k + l + 32·(t & 1)] (high nibble when t ≥ 2), high 2 bits in qh[32k + l] at 2t.
      const d = h(q, o + 208);
      for (let i = 0; i < 256; i++) {
        const k = i >> 7;
        const r = i & 127;
        const t = r >> 5;
        const l = r & 31;
        const lo = q[o + 64 * k + l + 32 * (t & 1)];
        const low = t >= 2 ? lo >> 4 : lo & 15;
        const high = (q[o + 128 + 32 * k + l] >> (2 * t)) & 3;
        const scale = (q[o + 192 + (i >> 4)] << 24) >> 24;
        out[i] = Math.fround(d * scale) * ((low | (high << 4)) - 32);
      }
    }
  }
  return y;
}

/** Inputs with the shapes real weights and edge cases have. */
function inputs(n: number): { name: string; x: Float32Array }[] {
  const r = rng(99);
  const outliers = randn(n, 3, 0.02);
  for (let i = 0; i < n; i += 37) outliers[i] *= 40;
  const zeroBlocks = randn(n, 4, 1);
  zeroBlocks.fill(0, 0, 256);
  const constant = new Float32Array(n).fill(0.3);
  const mixed = randn(n, 5, 1e-3);
  for (let i = 0; i < n; i++) if (r() < 0.1) mixed[i] = 0;
  return [
    { name: 'gaussian', x: randn(n, 1, 0.05) },
    { name: 'uniform positive', x: uniform(n, 2, 0, 2) },
    { name: 'uniform negative', x: uniform(n, 6, -3, -1) },
    { name: 'outliers', x: outliers },
    { name: 'a zero block', x: zeroBlocks },
    { name: 'constant', x: constant },
    { name: 'tiny with zeros', x: mixed },
  ];
}

describe('k-quant blocks (Q4_K, Q6_K) and Q5_0', () => {
  it.skipIf(!existsSync(LIBGGML))('are byte for byte what libggml writes', () => {
    // All inputs in one array (blocks are independent), one libggml call per format.
    const cases = inputs(4 * 256);
    const all = new Float32Array(cases.reduce((n, c) => n + c.x.length, 0));
    cases.reduce((at, c) => (all.set(c.x, at), at + c.x.length), 0);
    for (const kind of ['q4_K', 'q6_K', 'q5_0', 'q8_0'] as const) {
      const ours = OURS[kind](all);
      const ref = ggml(kind, all);
      expect(ours.length).toBe(ref.q.length);
      const bytesPer = (4 * 256 * BLOCK[kind].bytes) / BLOCK[kind].n;
      cases.forEach(({ name }, c) => {
        const at = c * bytesPer;
        const firstDiff = ours.subarray(at, at + bytesPer).findIndex((b, i) => b !== ref.q[at + i]);
        expect(firstDiff, `${kind} ${name}: first differing byte`).toBe(-1);
      });
      // Our dequantizer reads ggml's blocks like ggml does.
      const deq = dequant(kind, ref.q);
      const worst = deq.reduce((m, v, i) => Math.max(m, Math.abs(v - ref.deq[i])), 0);
      expect(worst, `${kind}: our dequantizer vs ggml's`).toBeLessThan(1e-6);
    }
  });

  it('round trip: the error of each format stays within its step size', () => {
    const x = randn(64 * 256, 7, 0.05);
    const rel = (kind: Kind) => {
      const y = dequant(kind, OURS[kind](x));
      let se = 0;
      let sx = 0;
      for (let i = 0; i < x.length; i++) {
        se += (x[i] - y[i]) ** 2;
        sx += x[i] ** 2;
      }
      return Math.sqrt(se / sx);
    };
    const q4 = rel('q4_K');
    const q5 = rel('q5_0');
    const q6 = rel('q6_K');
    const q8 = rel('q8_0');
    // Bits per weight 4.5 / 5.5 / 6.5625 / 8.5: each extra bit roughly halves the error.
    expect(q4).toBeLessThan(0.12);
    expect(q5).toBeLessThan(0.06);
    expect(q6).toBeLessThan(0.03);
    expect(q8).toBeLessThan(0.01);
    expect(q6).toBeLessThan(q5);
    expect(q5).toBeLessThan(q4);
    // Per element: never more than one quantization step of its (sub-)block off.
    const y4 = dequant('q4_K', quantizeQ4_K(x));
    for (let s = 0; s < x.length; s += 32) {
      let lo = 0;
      let hi = 0;
      for (let i = s; i < s + 32; i++) ((lo = Math.min(lo, x[i])), (hi = Math.max(hi, x[i])));
      const step = (hi - lo) / 15;
      for (let i = s; i < s + 32; i++) expect(Math.abs(x[i] - y4[i])).toBeLessThanOrEqual(step);
    }
    const y6 = dequant('q6_K', quantizeQ6_K(x));
    for (let s = 0; s < x.length; s += 16) {
      let amax = 0;
      for (let i = s; i < s + 16; i++) amax = Math.max(amax, Math.abs(x[i]));
      for (let i = s; i < s + 16; i++) expect(Math.abs(x[i] - y6[i])).toBeLessThanOrEqual(amax / 32);
    }
    // A zero super-block stays exactly zero.
    const z = new Float32Array(512);
    z.set(randn(256, 8), 256);
    for (const kind of ['q4_K', 'q6_K', 'q5_0'] as const) {
      const y = dequant(kind, OURS[kind](z));
      expect(Array.from(y.subarray(0, 256)).every((v) => v === 0)).toBe(true);
    }
  });

  it('rejects a length that is not a whole number of blocks', () => {
    expect(() => quantizeQ4_K(new Float32Array(300))).toThrow(/300 values is not a whole number of 256-blocks/);
    expect(() => quantizeQ6_K(new Float32Array(32))).toThrow(/not a whole number of 256-blocks/);
    expect(() => quantizeQ5_0(new Float32Array(40))).toThrow(/not a whole number of 32-blocks/);
  });
});

describe("q4_k_m: llama-quantize's per-tensor recipe", () => {
  it('use_more_bits picks the first and last eighth and every third layer between', () => {
    const pick = (n: number) => [...Array(n).keys()].filter((i) => useMoreBits(i, n));
    expect(pick(24)).toEqual([0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
    expect(pick(6)).toEqual([2, 5]);
    expect(pick(32)).toEqual([0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
  });

  it('types a Llama-3.2-1B shape (rows of 2048 and 8192, 16 layers, untied output)', () => {
    const t = (name: string, row: number) => q4KMTensorType(name, row, 16, false);
    expect(t('output.weight', 2048)).toBe('Q6_K');
    expect(t('token_embd.weight', 2048)).toBe('Q4_K'); // untied: the embedding is no output
    expect(t('blk.0.attn_v.weight', 2048)).toBe('Q6_K');
    expect(t('blk.3.attn_v.weight', 2048)).toBe('Q4_K');
    expect(t('blk.4.attn_v.weight', 2048)).toBe('Q6_K');
    expect(t('blk.4.ffn_down.weight', 8192)).toBe('Q6_K');
    expect(t('blk.5.ffn_down.weight', 8192)).toBe('Q4_K');
    expect(t('blk.5.attn_q.weight', 2048)).toBe('Q4_K');
    expect(t('blk.15.ffn_gate.weight', 2048)).toBe('Q4_K');
  });

  it('falls back like tensor_type_fallback on a Qwen2.5-0.5B shape (rows of 896 and 4864, tied)', () => {
    const t = (name: string, row: number) => q4KMTensorType(name, row, 24, true);
    expect(t('token_embd.weight', 896)).toBe('Q8_0'); // output role, 896 is no multiple of 256
    expect(t('blk.3.attn_q.weight', 896)).toBe('Q5_0'); // Q4_K → Q5_0
    expect(t('blk.0.attn_v.weight', 896)).toBe('Q8_0'); // Q6_K → Q8_0
    expect(t('blk.3.attn_output.weight', 896)).toBe('Q5_0');
    expect(t('blk.0.ffn_down.weight', 4864)).toBe('Q6_K'); // 4864 = 19 · 256
    expect(t('blk.3.ffn_down.weight', 4864)).toBe('Q4_K');
    expect(t('blk.3.ffn_up.weight', 896)).toBe('Q5_0');
    // Rows that are not even 32-blocks stay F16 (the demo model's ffn_down, 688).
    expect(t('blk.3.ffn_down.weight', 688)).toBe('F16');
    expect(t('blk.2.ffn_down.weight', 688)).toBe('F16');
    expect(q4KMTensorType('token_embd.weight', 100, 2, true)).toBe('F16');
  });

  it('is accepted as an export type; other llama.cpp types are named as not yet supported', () => {
    expect(checkGgufType('Q4_K_M')).toBe('q4_k_m');
    expect(() => checkGgufType('q4_k_s')).toThrow(/q4_k_s is not yet supported/);
  });
});
