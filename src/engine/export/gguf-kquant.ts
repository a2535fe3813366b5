// llama.cpp's k-quants Q4_K and Q6_K and the 32-block Q5_0, as ggml/src/ggml-quants.c's reference
// quantizers write them (quantize_row_q4_K_ref, quantize_row_q6_K_ref, quantize_row_q5_0_ref: the
// functions llama-quantize calls when it has no importance matrix). Every float step is rounded to
// f32 (Math.fround) in the C code's order so the bytes equal ggml's; tests compare them with
// libggml's own quantizers byte for byte.
//
// Block layouts (ggml-common.h), QK_K = 256 values per super-block:
// - Q4_K, 144 bytes: f16 d, f16 dmin, 12 bytes holding eight 6-bit scales and eight 6-bit mins
//   (sub-blocks of 32), 128 bytes of 4-bit values; x = d·scale·q − dmin·min.
// - Q6_K, 210 bytes: 128 bytes of low 4 bits, 64 bytes of high 2 bits, sixteen int8 scales
//   (sub-blocks of 16), f16 d; x = d·scale·(q − 32).
// - Q5_0, 22 bytes per 32 values: f16 d, 32 high bits (u32), 16 bytes of low nibbles; x = d·(q − 16).
import { f16BitsToF32, f32ToF16Bits } from '../numeric/half.ts';

const fr = Math.fround;
/** ggml-quants.c GROUP_MAX_EPS (1e-15f). */
const GROUP_MAX_EPS = fr(1e-15);
const TENTH = fr(0.1);

export const QK_K = 256;
export const Q4_K_BLOCK_BYTES = 144;
export const Q6_K_BLOCK_BYTES = 210;
export const Q5_0_BLOCK = 32;
export const Q5_0_BLOCK_BYTES = 22;

/** nearest_int: f32 + 1.5·2^23 rounds to an integer, halves to even. */
function nearestInt(f: number): number {
  return fr(f + 12582912) - 12582912;
}

const clamp = (v: number, lo: number, hi: number) => (v < lo ? lo : v > hi ? hi : v);

/**
 * make_qkx2_quants: levels L in [0, nmax] with x ≈ scale·L − theMin, the scale and min fitted by
 * weighted least squares over nstep+1 trial scales (the first guess spans [min(x, 0), max x]).
 * Writes L; returns the scale and sets out[0] = theMin (≥ 0).
 */
function makeQkx2Quants(
  n: number,
  nmax: number,
  x: Float32Array,
  w: Float32Array,
  L: Uint8Array,
  Laux: Uint8Array,
  rmin: number,
  rdelta: number,
  nstep: number,
  out: Float32Array,
): number {
  let min = x[0];
  let max = x[0];
  const sumW0 = w[0];
  let sumW = sumW0;
  let sumX = fr(sumW0 * x[0]);
  for (let i = 1; i < n; i++) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sumW = fr(sumW + w[i]);
    sumX = fr(sumX + fr(w[i] * x[i]));
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0, 0, n);
    out[0] = -min;
    return 0;
  }
  let iscale = fr(nmax / fr(max - min));
  let scale = fr(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const l = clamp(nearestInt(fr(iscale * fr(x[i] - min))), 0, nmax);
    L[i] = l;
    const diff = fr(fr(fr(scale * l) + min) - x[i]);
    bestError = fr(bestError + fr(w[i] * fr(diff * diff)));
  }
  for (let is = 0; is <= nstep; is++) {
    // `min` moves to each better fit, and the next trial's range moves with it (as in ggml).
    iscale = fr(fr(fr(rmin + fr(rdelta * is)) + nmax) / fr(max - min));
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = clamp(nearestInt(fr(iscale * fr(x[i] - min))), 0, nmax);
      Laux[i] = l;
      const wl = fr(w[i] * l);
      sumL = fr(sumL + wl);
      sumL2 = fr(sumL2 + fr(wl * l));
      sumXL = fr(sumXL + fr(wl * x[i]));
    }
    const D = fr(fr(sumW * sumL2) - fr(sumL * sumL));
    if (D > 0) {
      let thisScale = fr(fr(fr(sumW * sumXL) - fr(sumX * sumL)) / D);
      let thisMin = fr(fr(fr(sumL2 * sumX) - fr(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = fr(sumXL / sumL2);
      }
      let err = 0;
      for (let i = 0; i < n; i++) {
        const diff = fr(fr(fr(thisScale * Laux[i]) + thisMin) - x[i]);
        err = fr(err + fr(w[i] * fr(diff * diff)));
      }
      if (err < bestError) {
        L.set(Laux.subarray(0, n));
        bestError = err;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  out[0] = -min;
  return scale;
}

/**
 * make_qx_quants with rmse_type 1 and no importance weights: symmetric levels L + nmax in
 * [0, 2·nmax) with x ≈ scale·L, the scale chosen among 19 trials by x²-weighted least squares.
 */
function makeQxQuants(n: number, nmax: number, x: Float32Array, L: Uint8Array): number {
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < GROUP_MAX_EPS) {
    L.fill(0, 0, n);
    return 0;
  }
  let iscale = fr(-nmax / max);
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < n; i++) {
    const l = clamp(nearestInt(fr(iscale * x[i])), -nmax, nmax - 1);
    L[i] = l + nmax;
    const w = fr(x[i] * x[i]);
    sumlx = fr(sumlx + fr(fr(w * x[i]) * l));
    suml2 = fr(suml2 + fr(fr(w * l) * l));
  }
  let scale = suml2 ? fr(sumlx / suml2) : 0;
  let best = fr(scale * sumlx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = fr(-fr(nmax + fr(TENTH * is)) / max);
    sumlx = 0;
    suml2 = 0;
    for (let i = 0; i < n; i++) {
      const l = clamp(nearestInt(fr(iscale * x[i])), -nmax, nmax - 1);
      const w = fr(x[i] * x[i]);
      sumlx = fr(sumlx + fr(fr(w * x[i]) * l));
      suml2 = fr(suml2 + fr(fr(w * l) * l));
    }
    if (suml2 > 0 && fr(sumlx * sumlx) > fr(best * suml2)) {
      for (let i = 0; i < n; i++) L[i] = nmax + clamp(nearestInt(fr(iscale * x[i])), -nmax, nmax - 1);
      scale = fr(sumlx / suml2);
      best = fr(scale * sumlx);
    }
  }
  return scale;
}

/** get_scale_min_k4: sub-block j's 6-bit scale and min from the 12 packed bytes at `at`. */
function scaleMinK4(j: number, q: Uint8Array, at: number): [number, number] {
  if (j < 4) return [q[at + j] & 63, q[at + j + 4] & 63];
  return [(q[at + j + 4] & 0xf) | ((q[at + j - 4] >> 6) << 4), (q[at + j + 4] >> 4) | ((q[at + j] >> 6) << 4)];
}

function checkWhole(x: Float32Array, block: number, type: string) {
  if (x.length % block !== 0) throw new Error(`${type}: ${x.length} values is not a whole number of ${block}-blocks`);
}

/** Q4_K super-blocks of 256 values (x.length a multiple of 256). */
export function quantizeQ4_K(x: Float32Array): Uint8Array {
  checkWhole(x, QK_K, 'q4_K');
  const nb = x.length / QK_K;
  const out = new Uint8Array(nb * Q4_K_BLOCK_BYTES);
  const view = new DataView(out.buffer);
  const L = new Uint8Array(QK_K);
  const Laux = new Uint8Array(32);
  const weights = new Float32Array(32);
  const scales = new Float32Array(8);
  const mins = new Float32Array(8);
  const theMin = new Float32Array(1);
  for (let b = 0; b < nb; b++) {
    const xb = x.subarray(b * QK_K, (b + 1) * QK_K);
    const o = b * Q4_K_BLOCK_BYTES;
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 8; j++) {
      const xs = xb.subarray(32 * j, 32 * j + 32);
      let sumX2 = 0;
      for (let l = 0; l < 32; l++) sumX2 = fr(sumX2 + fr(xs[l] * xs[l]));
      const avX = fr(Math.sqrt(fr(sumX2 / 32)));
      for (let l = 0; l < 32; l++) weights[l] = fr(avX + Math.abs(xs[l]));
      scales[j] = makeQkx2Quants(32, 15, xs, weights, L.subarray(32 * j), Laux, -1, TENTH, 20, theMin);
      mins[j] = theMin[0];
      if (scales[j] > maxScale) maxScale = scales[j];
      if (mins[j] > maxMin) maxMin = mins[j];
    }
    const invScale = maxScale > 0 ? fr(63 / maxScale) : 0;
    const invMin = maxMin > 0 ? fr(63 / maxMin) : 0;
    const sc = o + 4; // the 12 scale bytes
    for (let j = 0; j < 8; j++) {
      const ls = Math.min(63, nearestInt(fr(invScale * scales[j])) & 0xff);
      const lm = Math.min(63, nearestInt(fr(invMin * mins[j])) & 0xff);
      if (j < 4) {
        out[sc + j] = ls;
        out[sc + j + 4] = lm;
      } else {
        out[sc + j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
        out[sc + j - 4] |= (ls >> 4) << 6;
        out[sc + j] |= (lm >> 4) << 6;
      }
    }
    const dBits = f32ToF16Bits(fr(maxScale / 63));
    const dminBits = f32ToF16Bits(fr(maxMin / 63));
    view.setUint16(o, dBits, true);
    view.setUint16(o + 2, dminBits, true);
    const d = f16BitsToF32(dBits);
    const dmin = f16BitsToF32(dminBits);
    for (let j = 0; j < 8; j++) {
      const [s, m] = scaleMinK4(j, out, sc);
      const dj = fr(d * s);
      if (!dj) continue; // keeps the levels make_qkx2_quants chose, as ggml does
      const dm = fr(dmin * m);
      for (let i = 0; i < 32; i++) L[32 * j + i] = clamp(nearestInt(fr(fr(xb[32 * j + i] + dm) / dj)), 0, 15);
    }
    const qs = o + 16;
    for (let j = 0; j < QK_K; j += 64)
      for (let l = 0; l < 32; l++) out[qs + j / 2 + l] = L[j + l] | (L[j + l + 32] << 4);
  }
  return out;
}

/** Q6_K super-blocks of 256 values (x.length a multiple of 256). */
export function quantizeQ6_K(x: Float32Array): Uint8Array {
  checkWhole(x, QK_K, 'q6_K');
  const nb = x.length / QK_K;
  const out = new Uint8Array(nb * Q6_K_BLOCK_BYTES);
  const view = new DataView(out.buffer);
  const L = new Uint8Array(QK_K);
  const scales = new Float32Array(16);
  for (let b = 0; b < nb; b++) {
    const xb = x.subarray(b * QK_K, (b + 1) * QK_K);
    const o = b * Q6_K_BLOCK_BYTES;
    let maxScale = 0;
    let maxAbsScale = 0;
    for (let ib = 0; ib < 16; ib++) {
      const s = makeQxQuants(16, 32, xb.subarray(16 * ib, 16 * ib + 16), L.subarray(16 * ib));
      scales[ib] = s;
      if (Math.abs(s) > maxAbsScale) {
        maxAbsScale = Math.abs(s);
        maxScale = s;
      }
    }
    if (maxAbsScale < GROUP_MAX_EPS) continue; // an all-zero block (d = 0 too)
    const iscale = fr(-128 / maxScale);
    const dBits = f32ToF16Bits(fr(1 / iscale));
    view.setUint16(o + 208, dBits, true);
    const d = f16BitsToF32(dBits);
    for (let ib = 0; ib < 16; ib++) view.setInt8(o + 192 + ib, Math.min(127, nearestInt(fr(iscale * scales[ib]))));
    for (let j = 0; j < 16; j++) {
      const dj = fr(d * view.getInt8(o + 192 + j));
      if (!dj) continue;
      for (let i = 0; i < 16; i++) L[16 * j + i] = clamp(nearestInt(fr(xb[16 * j + i] / dj)), -32, 31) + 32;
    }
    for (let j = 0; j < QK_K; j += 128) {
      const ql = o + j / 2;
      const qh = o + 128 + j / 4;
      for (let l = 0; l < 32; l++) {
        const a = L[j + l];
        const c = L[j + l + 32];
        const e = L[j + l + 64];
        const g = L[j + l + 96];
        out[ql + l] = (a & 0xf) | ((e & 0xf) << 4);
        out[ql + l + 32] = (c & 0xf) | ((g & 0xf) << 4);
        out[qh + l] = (a >> 4) | ((c >> 4) << 2) | ((e >> 4) << 4) | ((g >> 4) << 6);
      }
    }
  }
  return out;
}

/** Q5_0 blocks of 32 values: d = (the value of largest magnitude) / −16. */
export function quantizeQ5_0(x: Float32Array): Uint8Array {
  checkWhole(x, Q5_0_BLOCK, 'q5_0');
  const nb = x.length / Q5_0_BLOCK;
  const out = new Uint8Array(nb * Q5_0_BLOCK_BYTES);
  const view = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    const base = b * Q5_0_BLOCK;
    const o = b * Q5_0_BLOCK_BYTES;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < Q5_0_BLOCK; j++) {
      const v = x[base + j];
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = fr(max / -16);
    const id = d ? fr(1 / d) : 0;
    view.setUint16(o, f32ToF16Bits(d), true);
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      // (int8_t)(v + 16.5f) truncates toward zero; v + 16.5 lies in [0.5, 32.5].
      const q0 = Math.min(31, Math.trunc(fr(fr(x[base + j] * id) + 16.5)));
      const q1 = Math.min(31, Math.trunc(fr(fr(x[base + 16 + j] * id) + 16.5)));
      out[o + 6 + j] = (q0 & 0xf) | ((q1 & 0xf) << 4);
      qh |= ((q0 & 0x10) >> 4) << j;
      qh |= ((q1 & 0x10) >> 4) << (j + 16);
    }
    view.setUint32(o + 2, qh >>> 0, true);
  }
  return out;
}
