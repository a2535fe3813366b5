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

@compute @workgroup_size(256)
fn skinny(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let o = (wg.y * nwg.x + wg.x) * 256u + lid;
  if (o >= p.M * p.N) { return; }
  // j fastest: neighbouring threads share A's row and read neighbouring columns of B when bRow = 1.
  let m = o / p.N;
  let j = o % p.N;
  var acc = 0.0;
  for (var k = 0u; k < p.K; k++) {
    let ai = m * p.aRow + k * p.aCol;
    let bi = j * p.bRow + k * p.bCol;
    var av = a[ai];
    var bv = b[bi];
    if (DROP == 1u) { av *= keepScale(ai); }
    if (DROP == 2u) { bv *= keepScale(bi); }
    acc = fma(av, bv, acc);
  }
  var v = p.alpha * acc;
  if (DROP == 3u) { v *= keepScale(o); }
  // beta == 0 must not read C: a fresh pooled buffer may hold NaN bit patterns.
  if (p.beta != 0.0) { v += p.beta * c[o]; }
  c[o] = v;
}
