// LoRA kernels (PEFT: dropout only on the adapter's input, inverted scaling 1/(1−p) like torch).
// The keep mask of element e of x [N, in] is hash4(seed, step, module, e) ≥ dropThreshold; it is
// recomputed wherever it is needed, never stored.
//
// skinny: C[m, j] = alpha · Σ_k A(m, k)·B(j, k) + beta · C[m, j], one thread per output, for the
// products with an r-sized side (t = x·Aᵀ, g = dY·B, dB = dYᵀ·t, dA = gᵀ·x) where a 64×64 tiled
// matmul would leave most of each tile idle and launch only a handful of workgroups.
// A(m, k) = a[m·aRow + k·aCol], B(j, k) = b[j·bRow + k·bCol], C row-major [M, N].
// DROP selects where the mask applies: 0 nowhere, 1 on A's loads (index = its address in a),
// 2 on B's loads (address in b), 3 on the sum before it is added (index = m·N + j, the dX case).
#include "hash"

const DROP: u32 = {{DROP}};

struct Params {
  M: u32, N: u32, K: u32, _pad0: u32,
  aRow: u32, aCol: u32, bRow: u32, bCol: u32,
  alpha: f32, beta: f32, seed: u32, step: u32,
  moduleId: u32, dropThreshold: u32, dropScale: f32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

fn keepScale(e: u32) -> f32 {
  return select(0.0, p.dropScale, hash4(p.seed, p.step, p.moduleId, e) >= p.dropThreshold);
}

fn loadA(i: u32) -> f32 {
  var v = a[i];
  if (DROP == 1u) { v *= keepScale(i); }
  return v;
}

fn loadB(i: u32) -> f32 {
  var v = b[i];
  if (DROP == 2u) { v *= keepScale(i); }
  return v;
}

// Output o = m·N + j from its sum over k.
fn finish(o: u32, acc: f32) {
  var v = p.alpha * acc;
  if (DROP == 3u) { v *= keepScale(o); }
  // beta == 0 must not read C: a fresh pooled buffer may hold NaN bit patterns.
  if (p.beta != 0.0) { v += p.beta * c[o]; }
  c[o] = v;
}

@compute @workgroup_size(256)
fn skinny(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let o = (wg.y * nwg.x + wg.x) * 256u + lid;
  if (o >= p.M * p.N) { return; }
  // j fastest: neighbouring threads share A's row and read neighbouring columns of B when bRow = 1.
  let m = o / p.N;
  let j = o % p.N;
  var acc = 0.0;
  for (var k = 0u; k < p.K; k++) {
    acc = fma(loadA(m * p.aRow + k * p.aCol), loadB(j * p.bRow + k * p.bCol), acc);
  }
  finish(o, acc);
}

// skinny4x4: the same sums in the same order, each thread a 4×4 block of C (rows m0..m0+3,
// columns j0..j0+3): 8 loads feed 16 FMAs instead of 2 loads per FMA, for adapters where loads
// dominate (CPU-emulated ones); 16× fewer threads, so GPUs that need many in flight keep `skinny`
// (ops/lora.ts measures both). Written out without private arrays (SwiftShader keeps those in
// memory); rows/columns past the edge are clamped on reads and never stored.
@compute @workgroup_size(64)
fn skinny4x4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let blocksN = (p.N + 3u) / 4u;
  let o = (wg.y * nwg.x + wg.x) * 64u + lid;
  if (o >= ((p.M + 3u) / 4u) * blocksN) { return; }
  let m0 = (o / blocksN) * 4u;
  let j0 = (o % blocksN) * 4u;
  let a0 = min(m0, p.M - 1u) * p.aRow;
  let a1 = min(m0 + 1u, p.M - 1u) * p.aRow;
  let a2 = min(m0 + 2u, p.M - 1u) * p.aRow;
  let a3 = min(m0 + 3u, p.M - 1u) * p.aRow;
  let b0 = min(j0, p.N - 1u) * p.bRow;
  let b1 = min(j0 + 1u, p.N - 1u) * p.bRow;
  let b2 = min(j0 + 2u, p.N - 1u) * p.bRow;
  let b3 = min(j0 + 3u, p.N - 1u) * p.bRow;
  var c0 = vec4<f32>(0.0);
  var c1 = vec4<f32>(0.0);
  var c2 = vec4<f32>(0.0);
  var c3 = vec4<f32>(0.0);
  for (var k = 0u; k < p.K; k++) {
    let ka = k * p.aCol;
    let kb = k * p.bCol;
    let bv = vec4<f32>(loadB(b0 + kb), loadB(b1 + kb), loadB(b2 + kb), loadB(b3 + kb));
    c0 = fma(vec4<f32>(loadA(a0 + ka)), bv, c0);
    c1 = fma(vec4<f32>(loadA(a1 + ka)), bv, c1);
    c2 = fma(vec4<f32>(loadA(a2 + ka)), bv, c2);
    c3 = fma(vec4<f32>(loadA(a3 + ka)), bv, c3);
  }
  finishRow(m0, j0, c0);
  finishRow(m0 + 1u, j0, c1);
  finishRow(m0 + 2u, j0, c2);
  finishRow(m0 + 3u, j0, c3);
}

fn finishRow(m: u32, j0: u32, acc: vec4<f32>) {
  if (m >= p.M) { return; }
  for (var j = 0u; j < 4u; j++) {
    if (j0 + j < p.N) { finish(m * p.N + j0 + j, acc[j]); }
  }
}
