// C[b] = alpha · op(A[b]) · op(B[b]) + beta · C[b], f32 math, any M/N/K.
//   op(A) is M×K: A stored [M,K], or [K,M] when TRANS_A.
//   op(B) is K×N: B stored [K,N], or [N,K] when TRANS_B (the nn.Linear case y = x·Wᵀ).
// B comes through the weight decoder the constants select (`weightAt(i)`): weight_dense (f32, bf16,
// f16; 16-bit pairs unpacked here, never widened in memory) or weight_nf4 (4-bit codes decoded per
// element, so a quantized W is never materialised). Decoders own binding 2 and 4+.
//
// Three entry points compute the same product; which is fastest depends on the adapter (GPUs with
// fast workgroup memory favour the tiled ones, CPU-emulated adapters pay dearly for every barrier),
// so src/engine/ops/matmul.ts picks one per shape class by timing them (src/engine/ops/tuner.ts):
//   tiled64       64×64 outputs per 16×16 workgroup, 4×4 per thread strided by 16 (conflict-free
//                 workgroup-memory reads), K in slices of 16;
//   tiled128      128×128 outputs per 16×16 workgroup, 8×8 per thread as vec4 pairs read from
//                 vec4 workgroup tiles, K in slices of 8 (more reuse per load for big GPUs);
//   register8x8   no workgroup memory and no barriers: each thread of an 8×8 workgroup walks K
//                 alone for an 8×8 block of C, reading A and B straight from storage (caches do
//                 the sharing), with no bounds checks inside the K loop.
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

// ---- register8x8 ----
// Written out by hand, without private arrays or inner loops: a compiler that keeps dynamically
// indexed private arrays in memory (SwiftShader's does) would otherwise spill all 64 accumulators
// on every step — this form ran 4.5× faster there (npm run bench, matmul [register8x8]).

fn aRowStart(batch: u32, m: u32) -> u32 {
  let row = min(m, p.M - 1u);
  return aBase(batch) + select(row * p.K, row, TRANS_A);
}

fn bColStart(batch: u32, n: u32) -> u32 {
  let col = min(n, p.N - 1u);
  return bBase(batch) + select(col, col * p.K, TRANS_B);
}

fn storeRow8(batch: u32, m: u32, n0: u32, lo: vec4<f32>, hi: vec4<f32>) {
  for (var j = 0u; j < 4u; j++) {
    storeC(batch, m, n0 + j, lo[j]);
    storeC(batch, m, n0 + 4u + j, hi[j]);
  }
}

@compute @workgroup_size(8, 8, 1)
fn register8x8(@builtin(global_invocation_id) gid: vec3<u32>) {
  let m0 = gid.y * 8u;
  let n0 = gid.x * 8u;
  if (m0 >= p.M || n0 >= p.N) { return; }
  // Rows/columns past the edge are clamped onto the last one (always readable, never stored), so
  // the K loop has no bounds checks: each step is 16 loads feeding 64 FMAs.
  let a0 = aRowStart(gid.z, m0 + 0u);
  let a1 = aRowStart(gid.z, m0 + 1u);
  let a2 = aRowStart(gid.z, m0 + 2u);
  let a3 = aRowStart(gid.z, m0 + 3u);
  let a4 = aRowStart(gid.z, m0 + 4u);
  let a5 = aRowStart(gid.z, m0 + 5u);
  let a6 = aRowStart(gid.z, m0 + 6u);
  let a7 = aRowStart(gid.z, m0 + 7u);
  let b0 = bColStart(gid.z, n0 + 0u);
  let b1 = bColStart(gid.z, n0 + 1u);
  let b2 = bColStart(gid.z, n0 + 2u);
  let b3 = bColStart(gid.z, n0 + 3u);
  let b4 = bColStart(gid.z, n0 + 4u);
  let b5 = bColStart(gid.z, n0 + 5u);
  let b6 = bColStart(gid.z, n0 + 6u);
  let b7 = bColStart(gid.z, n0 + 7u);
  var c0lo = vec4<f32>(0.0);
  var c0hi = vec4<f32>(0.0);
  var c1lo = vec4<f32>(0.0);
  var c1hi = vec4<f32>(0.0);
  var c2lo = vec4<f32>(0.0);
  var c2hi = vec4<f32>(0.0);
  var c3lo = vec4<f32>(0.0);
  var c3hi = vec4<f32>(0.0);
  var c4lo = vec4<f32>(0.0);
  var c4hi = vec4<f32>(0.0);
  var c5lo = vec4<f32>(0.0);
  var c5hi = vec4<f32>(0.0);
  var c6lo = vec4<f32>(0.0);
  var c6hi = vec4<f32>(0.0);
  var c7lo = vec4<f32>(0.0);
  var c7hi = vec4<f32>(0.0);
  let aStep = select(1u, p.M, TRANS_A);
  let bStep = select(p.N, 1u, TRANS_B);
  var ka = 0u;
  var kb = 0u;
  for (var k = 0u; k < p.K; k++) {
    let bLo = vec4<f32>(weightAt(b0 + kb), weightAt(b1 + kb), weightAt(b2 + kb), weightAt(b3 + kb));
    let bHi = vec4<f32>(weightAt(b4 + kb), weightAt(b5 + kb), weightAt(b6 + kb), weightAt(b7 + kb));
    let x0 = vec4<f32>(a[a0 + ka]);
    c0lo = fma(x0, bLo, c0lo);
    c0hi = fma(x0, bHi, c0hi);
    let x1 = vec4<f32>(a[a1 + ka]);
    c1lo = fma(x1, bLo, c1lo);
    c1hi = fma(x1, bHi, c1hi);
    let x2 = vec4<f32>(a[a2 + ka]);
    c2lo = fma(x2, bLo, c2lo);
    c2hi = fma(x2, bHi, c2hi);
    let x3 = vec4<f32>(a[a3 + ka]);
    c3lo = fma(x3, bLo, c3lo);
    c3hi = fma(x3, bHi, c3hi);
    let x4 = vec4<f32>(a[a4 + ka]);
    c4lo = fma(x4, bLo, c4lo);
    c4hi = fma(x4, bHi, c4hi);
    let x5 = vec4<f32>(a[a5 + ka]);
    c5lo = fma(x5, bLo, c5lo);
    c5hi = fma(x5, bHi, c5hi);
    let x6 = vec4<f32>(a[a6 + ka]);
    c6lo = fma(x6, bLo, c6lo);
    c6hi = fma(x6, bHi, c6hi);
    let x7 = vec4<f32>(a[a7 + ka]);
    c7lo = fma(x7, bLo, c7lo);
    c7hi = fma(x7, bHi, c7hi);
    ka += aStep;
    kb += bStep;
  }
  storeRow8(gid.z, m0 + 0u, n0, c0lo, c0hi);
  storeRow8(gid.z, m0 + 1u, n0, c1lo, c1hi);
  storeRow8(gid.z, m0 + 2u, n0, c2lo, c2hi);
  storeRow8(gid.z, m0 + 3u, n0, c3lo, c3hi);
  storeRow8(gid.z, m0 + 4u, n0, c4lo, c4hi);
  storeRow8(gid.z, m0 + 5u, n0, c5lo, c5hi);
  storeRow8(gid.z, m0 + 6u, n0, c6lo, c6hi);
  storeRow8(gid.z, m0 + 7u, n0, c7lo, c7hi);
}
