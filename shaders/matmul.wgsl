// C[b] = alpha · op(A[b]) · op(B[b]) + beta · C[b], f32 math, any M/N/K.
//   op(A) is M×K: A stored [M,K], or [K,M] when TRANS_A.
//   op(B) is K×N: B stored [K,N], or [N,K] when TRANS_B (the nn.Linear case y = x·Wᵀ).
// B comes through the weight decoder the constants select (`weightAt(i)`): weight_dense (f32, bf16,
// f16; 16-bit pairs unpacked here, never widened in memory) or weight_nf4 (4-bit codes decoded per
// element, so a quantized W is never materialised). Decoders own binding 2 and 4+.
// Tiles: 64×64 outputs per workgroup of 16×16 threads, each thread 4×4 outputs strided by 16
// so workgroup-memory reads are conflict-free; K is walked in slices of 16.
#include "{{B_DECODE}}"

const TRANS_A: bool = {{TRANS_A}};
const TRANS_B: bool = {{TRANS_B}};
const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

struct Params {
  M: u32, N: u32, K: u32, _pad0: u32,
  aOffset: u32, bOffset: u32, cOffset: u32, _pad1: u32,
  aBatchStride: u32, bBatchStride: u32, cBatchStride: u32, _pad2: u32,
  alpha: f32, beta: f32, _pad3: u32, _pad4: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

var<workgroup> tileA: array<f32, 1024>; // [TK][TM]
var<workgroup> tileB: array<f32, 1024>; // [TK][TN]

fn loadA(base: u32, m: u32, k: u32) -> f32 {
  if (m >= p.M || k >= p.K) { return 0.0; }
  return a[base + select(m * p.K + k, k * p.M + m, TRANS_A)];
}

fn loadB(base: u32, k: u32, n: u32) -> f32 {
  if (k >= p.K || n >= p.N) { return 0.0; }
  let i = base + select(k * p.N + n, n * p.K + k, TRANS_B);
  return weightAt(i);
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let batch = wg.z;
  let m0 = wg.y * TM;
  let n0 = wg.x * TN;
  let t = lid.y * 16u + lid.x;
  let aBase = p.aOffset + batch * p.aBatchStride;
  let bBase = p.bOffset + batch * p.bBatchStride;

  var acc: array<array<f32, 4>, 4>;
  for (var k0 = 0u; k0 < p.K; k0 += TK) {
    for (var i = 0u; i < 4u; i++) {
      let idx = t + i * 256u;
      // Global reads walk the stored fast axis so neighbouring threads read neighbouring words.
      var mm: u32; var ka: u32;
      if (TRANS_A) { mm = idx % TM; ka = idx / TM; } else { mm = idx / TK; ka = idx % TK; }
      tileA[ka * TM + mm] = loadA(aBase, m0 + mm, k0 + ka);
      var nn: u32; var kb: u32;
      if (TRANS_B) { nn = idx / TK; kb = idx % TK; } else { nn = idx % TN; kb = idx / TN; }
      tileB[kb * TN + nn] = loadB(bBase, k0 + kb, n0 + nn);
    }
    workgroupBarrier();
    for (var k = 0u; k < TK; k++) {
      var av: array<f32, 4>;
      var bv: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        av[i] = tileA[k * TM + lid.y + 16u * i];
        bv[i] = tileB[k * TN + lid.x + 16u * i];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
          acc[i][j] = fma(av[i], bv[j], acc[i][j]);
        }
      }
    }
    workgroupBarrier();
  }

  let cBase = p.cOffset + batch * p.cBatchStride;
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + lid.y + 16u * i;
    if (m >= p.M) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + lid.x + 16u * j;
      if (n >= p.N) { continue; }
      let ci = cBase + m * p.N + n;
      var v = p.alpha * acc[i][j];
      // beta == 0 must not read C: a fresh pooled buffer may hold NaN bit patterns.
      if (p.beta != 0.0) { v += p.beta * c[ci]; }
      c[ci] = v;
    }
  }
}
