// C[b] = alpha · op(A[b]) · op(B[b]) + beta · C[b], f32 math, any M/N/K.
//   op(A) is M×K: A stored [M,K], or [K,M] when TRANS_A.
//   op(B) is K×N: B stored [K,N], or [N,K] when TRANS_B (the nn.Linear case y = x·Wᵀ).
// B comes through the weight decoder the constants select (`weightAt(i)`, `weightOctet(c)`):
// weight_dense_octet (f32, bf16, f16; 16-bit pairs unpacked here, never widened in memory) or
// weight_nf4_octet (4-bit codes decoded in registers, so a quantized W is never materialised).
// Decoders own binding 2 and 4+.
//
// Four entry points compute the same product; which is fastest depends on the adapter (GPUs with
// fast workgroup memory favour the tiled ones, CPU-emulated adapters pay dearly for every barrier),
// so src/engine/ops/matmul.ts picks one per shape class by timing them (src/engine/ops/tuner.ts):
//   tiled64       64×64 outputs per 16×16 workgroup, 4×4 per thread strided by 16 (conflict-free
//                 workgroup-memory reads), K in slices of 16;
//   tiled128      128×128 outputs per 16×16 workgroup, 8×8 per thread as vec4 pairs read from
//                 vec4 workgroup tiles, K in slices of 8 (more reuse per load for big GPUs);
//   register8x8   no workgroup memory and no barriers: each thread of an 8×8 workgroup walks K
//                 alone for an 8×8 block of C, reading A and B straight from storage (caches do
//                 the sharing), with no bounds checks inside the K loop;
//   octet8x8      register8x8 decoding B eight weights at a time where the octets line up.
// All four accumulate each output with one fma per k in increasing k: their results are identical.
#include "{{B_DECODE}}"

const TRANS_A: bool = {{TRANS_A}};
const TRANS_B: bool = {{TRANS_B}};

struct Params {
  M: u32, N: u32, K: u32, _pad0: u32,
  aOffset: u32, bOffset: u32, cOffset: u32, _pad1: u32,
  aBatchStride: u32, bBatchStride: u32, cBatchStride: u32, _pad2: u32,
  alpha: f32, beta: f32, _pad3: u32, _pad4: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

fn loadA(base: u32, m: u32, k: u32) -> f32 {
  if (m >= p.M || k >= p.K) { return 0.0; }
  return a[base + select(m * p.K + k, k * p.M + m, TRANS_A)];
}

fn loadB(base: u32, k: u32, n: u32) -> f32 {
  if (k >= p.K || n >= p.N) { return 0.0; }
  let i = base + select(k * p.N + n, n * p.K + k, TRANS_B);
  return weightAt(i);
}

fn storeC(batch: u32, m: u32, n: u32, acc: f32) {
  if (m >= p.M || n >= p.N) { return; }
  let ci = p.cOffset + batch * p.cBatchStride + m * p.N + n;
  var v = p.alpha * acc;
  // beta == 0 must not read C: a fresh pooled buffer may hold NaN bit patterns.
  if (p.beta != 0.0) { v += p.beta * c[ci]; }
  c[ci] = v;
}

fn aBase(batch: u32) -> u32 { return p.aOffset + batch * p.aBatchStride; }
fn bBase(batch: u32) -> u32 { return p.bOffset + batch * p.bBatchStride; }

// ---- tiled64 ----

var<workgroup> tileA: array<f32, 1024>; // [16 k][64 m]
var<workgroup> tileB: array<f32, 1024>; // [16 k][64 n]

@compute @workgroup_size(16, 16, 1)
fn tiled64(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let m0 = wg.y * 64u;
  let n0 = wg.x * 64u;
  let t = lid.y * 16u + lid.x;
  let ab = aBase(wg.z);
  let bb = bBase(wg.z);
  var acc: array<array<f32, 4>, 4>;
  for (var k0 = 0u; k0 < p.K; k0 += 16u) {
    for (var i = 0u; i < 4u; i++) {
      let idx = t + i * 256u;
      // Global reads walk the stored fast axis so neighbouring threads read neighbouring words.
      var mm: u32; var ka: u32;
      if (TRANS_A) { mm = idx % 64u; ka = idx / 64u; } else { mm = idx / 16u; ka = idx % 16u; }
      tileA[ka * 64u + mm] = loadA(ab, m0 + mm, k0 + ka);
      var nn: u32; var kb: u32;
      if (TRANS_B) { nn = idx / 16u; kb = idx % 16u; } else { nn = idx % 64u; kb = idx / 64u; }
      tileB[kb * 64u + nn] = loadB(bb, k0 + kb, n0 + nn);
    }
    workgroupBarrier();
    for (var k = 0u; k < 16u; k++) {
      var av: array<f32, 4>;
      var bv: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        av[i] = tileA[k * 64u + lid.y + 16u * i];
        bv[i] = tileB[k * 64u + lid.x + 16u * i];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
          acc[i][j] = fma(av[i], bv[j], acc[i][j]);
        }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    for (var j = 0u; j < 4u; j++) {
      storeC(wg.z, m0 + lid.y + 16u * i, n0 + lid.x + 16u * j, acc[i][j]);
    }
  }
}

// ---- tiled128 ----

var<workgroup> tileA4: array<vec4<f32>, 256>; // [8 k][32 m-quads]
var<workgroup> tileB4: array<vec4<f32>, 256>; // [8 k][32 n-quads]

@compute @workgroup_size(16, 16, 1)
fn tiled128(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let m0 = wg.y * 128u;
  let n0 = wg.x * 128u;
  let t = lid.y * 16u + lid.x;
  let ab = aBase(wg.z);
  let bb = bBase(wg.z);
  // Each thread fills one quad of each tile; the quad runs along m (n), and the thread order follows
  // the stored fast axis so neighbouring threads read neighbouring words.
  var ka: u32; var qa: u32;
  if (TRANS_A) { ka = t / 32u; qa = t % 32u; } else { ka = t % 8u; qa = t / 8u; }
  var kb: u32; var qb: u32;
  if (TRANS_B) { kb = t % 8u; qb = t / 8u; } else { kb = t / 32u; qb = t % 32u; }
  var acc: array<array<vec4<f32>, 2>, 8>;
  for (var k0 = 0u; k0 < p.K; k0 += 8u) {
    let ma = m0 + qa * 4u;
    tileA4[ka * 32u + qa] = vec4<f32>(
      loadA(ab, ma, k0 + ka), loadA(ab, ma + 1u, k0 + ka), loadA(ab, ma + 2u, k0 + ka), loadA(ab, ma + 3u, k0 + ka));
    let nb = n0 + qb * 4u;
    tileB4[kb * 32u + qb] = vec4<f32>(
      loadB(bb, k0 + kb, nb), loadB(bb, k0 + kb, nb + 1u), loadB(bb, k0 + kb, nb + 2u), loadB(bb, k0 + kb, nb + 3u));
    workgroupBarrier();
    for (var k = 0u; k < 8u; k++) {
      let aLo = tileA4[k * 32u + lid.y];
      let aHi = tileA4[k * 32u + 16u + lid.y];
      let bLo = tileB4[k * 32u + lid.x];
      let bHi = tileB4[k * 32u + 16u + lid.x];
      for (var i = 0u; i < 4u; i++) {
        acc[i][0] = fma(vec4<f32>(aLo[i]), bLo, acc[i][0]);
        acc[i][1] = fma(vec4<f32>(aLo[i]), bHi, acc[i][1]);
        acc[4u + i][0] = fma(vec4<f32>(aHi[i]), bLo, acc[4u + i][0]);
        acc[4u + i][1] = fma(vec4<f32>(aHi[i]), bHi, acc[4u + i][1]);
      }
    }
    workgroupBarrier();
  }
  for (var r = 0u; r < 8u; r++) {
    let m = m0 + (r / 4u) * 64u + lid.y * 4u + r % 4u;
    for (var h = 0u; h < 2u; h++) {
      let n = n0 + h * 64u + lid.x * 4u;
      for (var j = 0u; j < 4u; j++) { storeC(wg.z, m, n + j, acc[r][h][j]); }
    }
  }
}

// ---- register8x8 and octet8x8 ----
// Written out without private arrays or inner loops over them: a compiler that keeps dynamically
// indexed private arrays in memory (SwiftShader's) would spill all 64 accumulators on every step
// (this form ran 4.5× faster there). Rows/columns past the edge are clamped onto the last one
// (always readable, never stored), so the K loops have no bounds checks.

// C block of one thread: row i's columns n0..n0+3 in c<i>lo, n0+4..n0+7 in c<i>hi.
struct Block8 {
  c0lo: vec4<f32>, c0hi: vec4<f32>,
  c1lo: vec4<f32>, c1hi: vec4<f32>,
  c2lo: vec4<f32>, c2hi: vec4<f32>,
  c3lo: vec4<f32>, c3hi: vec4<f32>,
  c4lo: vec4<f32>, c4hi: vec4<f32>,
  c5lo: vec4<f32>, c5hi: vec4<f32>,
  c6lo: vec4<f32>, c6hi: vec4<f32>,
  c7lo: vec4<f32>, c7hi: vec4<f32>,
}

// Start of row m0+i of op(A) in a, and of column n0+i of op(B) in the weight.
struct Starts8 {
  i0: u32, i1: u32, i2: u32, i3: u32, i4: u32, i5: u32, i6: u32, i7: u32,
}

fn aRowStarts(batch: u32, m0: u32) -> Starts8 {
  return Starts8(aRowStart(batch, m0 + 0u), aRowStart(batch, m0 + 1u), aRowStart(batch, m0 + 2u), aRowStart(batch, m0 + 3u), aRowStart(batch, m0 + 4u), aRowStart(batch, m0 + 5u), aRowStart(batch, m0 + 6u), aRowStart(batch, m0 + 7u));
}

fn bColStarts(batch: u32, n0: u32) -> Starts8 {
  return Starts8(bColStart(batch, n0 + 0u), bColStart(batch, n0 + 1u), bColStart(batch, n0 + 2u), bColStart(batch, n0 + 3u), bColStart(batch, n0 + 4u), bColStart(batch, n0 + 5u), bColStart(batch, n0 + 6u), bColStart(batch, n0 + 7u));
}

fn aRowStart(batch: u32, m: u32) -> u32 {
  let row = min(m, p.M - 1u);
  return aBase(batch) + select(row * p.K, row, TRANS_A);
}

fn bColStart(batch: u32, n: u32) -> u32 {
  let col = min(n, p.N - 1u);
  return bBase(batch) + select(col, col * p.K, TRANS_B);
}

// One step of K: acc += op(A)[rows, k] ⊗ op(B)[k, n0..n0+7], with ka the step's offset from the row starts.
fn fmaStep(rows: Starts8, ka: u32, bLo: vec4<f32>, bHi: vec4<f32>, acc: ptr<function, Block8>) {
  let x0 = vec4<f32>(a[rows.i0 + ka]);
  (*acc).c0lo = fma(x0, bLo, (*acc).c0lo);
  (*acc).c0hi = fma(x0, bHi, (*acc).c0hi);
  let x1 = vec4<f32>(a[rows.i1 + ka]);
  (*acc).c1lo = fma(x1, bLo, (*acc).c1lo);
  (*acc).c1hi = fma(x1, bHi, (*acc).c1hi);
  let x2 = vec4<f32>(a[rows.i2 + ka]);
  (*acc).c2lo = fma(x2, bLo, (*acc).c2lo);
  (*acc).c2hi = fma(x2, bHi, (*acc).c2hi);
  let x3 = vec4<f32>(a[rows.i3 + ka]);
  (*acc).c3lo = fma(x3, bLo, (*acc).c3lo);
  (*acc).c3hi = fma(x3, bHi, (*acc).c3hi);
  let x4 = vec4<f32>(a[rows.i4 + ka]);
  (*acc).c4lo = fma(x4, bLo, (*acc).c4lo);
  (*acc).c4hi = fma(x4, bHi, (*acc).c4hi);
  let x5 = vec4<f32>(a[rows.i5 + ka]);
  (*acc).c5lo = fma(x5, bLo, (*acc).c5lo);
  (*acc).c5hi = fma(x5, bHi, (*acc).c5hi);
  let x6 = vec4<f32>(a[rows.i6 + ka]);
  (*acc).c6lo = fma(x6, bLo, (*acc).c6lo);
  (*acc).c6hi = fma(x6, bHi, (*acc).c6hi);
  let x7 = vec4<f32>(a[rows.i7 + ka]);
  (*acc).c7lo = fma(x7, bLo, (*acc).c7lo);
  (*acc).c7hi = fma(x7, bHi, (*acc).c7hi);
}

// Steps k0..k1-1 with B read element by element.
fn elementSteps(rows: Starts8, cols: Starts8, k0: u32, k1: u32, acc: ptr<function, Block8>) {
  let aStep = select(1u, p.M, TRANS_A);
  let bStep = select(p.N, 1u, TRANS_B);
  var ka = k0 * aStep;
  var kb = k0 * bStep;
  for (var k = k0; k < k1; k++) {
    let bLo = vec4<f32>(weightAt(cols.i0 + kb), weightAt(cols.i1 + kb), weightAt(cols.i2 + kb), weightAt(cols.i3 + kb));
    let bHi = vec4<f32>(weightAt(cols.i4 + kb), weightAt(cols.i5 + kb), weightAt(cols.i6 + kb), weightAt(cols.i7 + kb));
    fmaStep(rows, ka, bLo, bHi, acc);
    ka += aStep;
    kb += bStep;
  }
}

fn storeRow8(batch: u32, m: u32, n0: u32, lo: vec4<f32>, hi: vec4<f32>) {
  for (var j = 0u; j < 4u; j++) {
    storeC(batch, m, n0 + j, lo[j]);
    storeC(batch, m, n0 + 4u + j, hi[j]);
  }
}

fn storeBlock8(batch: u32, m0: u32, n0: u32, acc: Block8) {
  storeRow8(batch, m0 + 0u, n0, acc.c0lo, acc.c0hi);
  storeRow8(batch, m0 + 1u, n0, acc.c1lo, acc.c1hi);
  storeRow8(batch, m0 + 2u, n0, acc.c2lo, acc.c2hi);
  storeRow8(batch, m0 + 3u, n0, acc.c3lo, acc.c3hi);
  storeRow8(batch, m0 + 4u, n0, acc.c4lo, acc.c4hi);
  storeRow8(batch, m0 + 5u, n0, acc.c5lo, acc.c5hi);
  storeRow8(batch, m0 + 6u, n0, acc.c6lo, acc.c6hi);
  storeRow8(batch, m0 + 7u, n0, acc.c7lo, acc.c7hi);
}

@compute @workgroup_size(8, 8, 1)
fn register8x8(@builtin(global_invocation_id) gid: vec3<u32>) {
  let m0 = gid.y * 8u;
  let n0 = gid.x * 8u;
  if (m0 >= p.M || n0 >= p.N) { return; }
  var acc: Block8;
  elementSteps(aRowStarts(gid.z, m0), bColStarts(gid.z, n0), 0u, p.K, &acc);
  storeBlock8(gid.z, m0, n0, acc);
}

// octet8x8: register8x8 reading B eight weights at a time (weightOctet: one word of NF4 codes and
// one block scale, or four words of 16-bit pairs) where the octets line up: op(B)'s row k holds
// columns n0..n0+7 in one octet (B stored [K,N], N and the offset multiples of 8: the dX = dY·W
// products), or each column's K run is whole octets (B stored [N,K], K and the offset multiples of
// 8: y = x·Wᵀ). The FMAs are register8x8's, in the same order: the same sums to the bit.
@compute @workgroup_size(8, 8, 1)
fn octet8x8(@builtin(global_invocation_id) gid: vec3<u32>) {
  let m0 = gid.y * 8u;
  let n0 = gid.x * 8u;
  if (m0 >= p.M || n0 >= p.N) { return; }
  let rows = aRowStarts(gid.z, m0);
  let cols = bColStarts(gid.z, n0);
  let bb = bBase(gid.z);
  let aStep = select(1u, p.M, TRANS_A);
  var acc: Block8;
  if (!TRANS_B && (p.N & 7u) == 0u && (bb & 7u) == 0u) {
    var ka = 0u;
    var octet = (bb + n0) >> 3u;
    for (var k = 0u; k < p.K; k++) {
      let o = weightOctet(octet);
      fmaStep(rows, ka, o.lo, o.hi, &acc);
      ka += aStep;
      octet += p.N >> 3u;
    }
  } else if (TRANS_B && (p.K & 7u) == 0u && (bb & 7u) == 0u) {
    var ka = 0u;
    let octets = p.K >> 3u;
    for (var j = 0u; j < octets; j++) {
      let o0 = weightOctet((cols.i0 >> 3u) + j);
      let o1 = weightOctet((cols.i1 >> 3u) + j);
      let o2 = weightOctet((cols.i2 >> 3u) + j);
      let o3 = weightOctet((cols.i3 >> 3u) + j);
      let o4 = weightOctet((cols.i4 >> 3u) + j);
      let o5 = weightOctet((cols.i5 >> 3u) + j);
      let o6 = weightOctet((cols.i6 >> 3u) + j);
      let o7 = weightOctet((cols.i7 >> 3u) + j);
      fmaStep(rows, ka, vec4<f32>(o0.lo.x, o1.lo.x, o2.lo.x, o3.lo.x), vec4<f32>(o4.lo.x, o5.lo.x, o6.lo.x, o7.lo.x), &acc);
      ka += aStep;
      fmaStep(rows, ka, vec4<f32>(o0.lo.y, o1.lo.y, o2.lo.y, o3.lo.y), vec4<f32>(o4.lo.y, o5.lo.y, o6.lo.y, o7.lo.y), &acc);
      ka += aStep;
      fmaStep(rows, ka, vec4<f32>(o0.lo.z, o1.lo.z, o2.lo.z, o3.lo.z), vec4<f32>(o4.lo.z, o5.lo.z, o6.lo.z, o7.lo.z), &acc);
      ka += aStep;
      fmaStep(rows, ka, vec4<f32>(o0.lo.w, o1.lo.w, o2.lo.w, o3.lo.w), vec4<f32>(o4.lo.w, o5.lo.w, o6.lo.w, o7.lo.w), &acc);
      ka += aStep;
      fmaStep(rows, ka, vec4<f32>(o0.hi.x, o1.hi.x, o2.hi.x, o3.hi.x), vec4<f32>(o4.hi.x, o5.hi.x, o6.hi.x, o7.hi.x), &acc);
      ka += aStep;
      fmaStep(rows, ka, vec4<f32>(o0.hi.y, o1.hi.y, o2.hi.y, o3.hi.y), vec4<f32>(o4.hi.y, o5.hi.y, o6.hi.y, o7.hi.y), &acc);
      ka += aStep;
      fmaStep(rows, ka, vec4<f32>(o0.hi.z, o1.hi.z, o2.hi.z, o3.hi.z), vec4<f32>(o4.hi.z, o5.hi.z, o6.hi.z, o7.hi.z), &acc);
      ka += aStep;
      fmaStep(rows, ka, vec4<f32>(o0.hi.w, o1.hi.w, o2.hi.w, o3.hi.w), vec4<f32>(o4.hi.w, o5.hi.w, o6.hi.w, o7.hi.w), &acc);
      ka += aStep;
    }
  } else {
    elementSteps(rows, cols, 0u, p.K, &acc);
  }
  storeBlock8(gid.z, m0, n0, acc);
}
