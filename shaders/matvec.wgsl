// y[m, n] = alpha · Σ_k x[m, k]·W[n, k] + beta · y[m, n] for a few rows m < ROWS (1..8): the
// one-token (KV-cache decode) form of the linear layer y = x·Wᵀ, W stored [N, K] like
// nn.Linear.weight. The tiled matmul would fill one row of a 64-row tile and launch N/64
// workgroups; here every output n gets LANES threads that split its K, and a workgroup holds
// WG/LANES outputs, so a 128-wide projection still spreads over several workgroups and the
// 151,936-wide head over thousands (threads along K and a reduction per output, as llama.cpp's
// CUDA mul_mat_vec in ggml-cuda/mmv.cu; the split is chosen in src/engine/ops/matvec.ts).
//
// W comes through the decoder the constants select (`weightAt(i)` for single elements,
// `weightOctet(c)` for elements 8c..8c+7): weight_dense_octet (f32, bf16, f16) or
// weight_nf4_octet (NF4 codes decoded in registers, one block scale per octet). Each output's
// row spans [s, s+K) of the flattened weight; the octets inside it are read whole, the at most
// 7 + 7 elements before the first and after the last aligned octet one by one (K and the row
// start need not be multiples of anything).
//
// The reduction is plain workgroup memory and one barrier (no subgroups): each of the first
// ROWS·OUTS threads then adds one output's LANES partial sums in order.
#include "{{W_DECODE}}"

const ROWS: u32 = {{ROWS}};
const LANES: u32 = {{LANES}};
const WG: u32 = {{WG}};
const OUTS: u32 = WG / LANES;

struct Params {
  N: u32, K: u32, xOffset: u32, yOffset: u32,
  yRowStride: u32, alpha: f32, beta: f32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

var<workgroup> partial: array<f32, ROWS * WG>;

fn xAt(m: u32, k: u32) -> f32 {
  return x[p.xOffset + m * p.K + k];
}

fn xQuad(m: u32, k: u32) -> vec4<f32> {
  let i = p.xOffset + m * p.K + k;
  return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
}

// The rows are written out (rows m0..m0+3 in one vec4, the ones past ROWS left at zero) instead of
// looping over a private array: compilers that keep such arrays in memory (SwiftShader's) made the
// one-token step several times slower. ROWS is a constant, so the branches fold away.
fn xColumn(m0: u32, k: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  if (m0 < ROWS) { v.x = xAt(m0, k); }
  if (m0 + 1u < ROWS) { v.y = xAt(m0 + 1u, k); }
  if (m0 + 2u < ROWS) { v.z = xAt(m0 + 2u, k); }
  if (m0 + 3u < ROWS) { v.w = xAt(m0 + 3u, k); }
  return v;
}

fn octetDot(m: u32, k: u32, w: Octet) -> f32 {
  return dot(xQuad(m, k), w.lo) + dot(xQuad(m, k + 4u), w.hi);
}

fn octetColumn(m0: u32, k: u32, w: Octet) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  if (m0 < ROWS) { v.x = octetDot(m0, k, w); }
  if (m0 + 1u < ROWS) { v.y = octetDot(m0 + 1u, k, w); }
  if (m0 + 2u < ROWS) { v.z = octetDot(m0 + 2u, k, w); }
  if (m0 + 3u < ROWS) { v.w = octetDot(m0 + 3u, k, w); }
  return v;
}

fn storePartials(m0: u32, t: u32, acc: vec4<f32>) {
  if (m0 < ROWS) { partial[m0 * WG + t] = acc.x; }
  if (m0 + 1u < ROWS) { partial[(m0 + 1u) * WG + t] = acc.y; }
  if (m0 + 2u < ROWS) { partial[(m0 + 2u) * WG + t] = acc.z; }
  if (m0 + 3u < ROWS) { partial[(m0 + 3u) * WG + t] = acc.w; }
}

@compute @workgroup_size(WG)
fn matvec(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) t: u32,
) {
  let out = t / LANES;
  let lane = t % LANES;
  let n = (wg.y * nwg.x + wg.x) * OUTS + out;
  // Rows 0-3 and 4-7.
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  if (n < p.N) {
    let s = n * p.K;
    let e = s + p.K;
    // [s, a0) and [a1, e) element by element, octets [a0, a1) whole.
    let a0 = min((s + 7u) & ~7u, e);
    let a1 = max(e & ~7u, a0);
    for (var i = s + lane; i < a0; i += LANES) {
      let w = vec4<f32>(weightAt(i));
      acc0 = fma(xColumn(0u, i - s), w, acc0);
      if (ROWS > 4u) { acc1 = fma(xColumn(4u, i - s), w, acc1); }
    }
    for (var c = a0 / 8u + lane; c < a1 / 8u; c += LANES) {
      let w = weightOctet(c);
      let k = c * 8u - s;
      acc0 += octetColumn(0u, k, w);
      if (ROWS > 4u) { acc1 += octetColumn(4u, k, w); }
    }
    for (var i = a1 + lane; i < e; i += LANES) {
      let w = vec4<f32>(weightAt(i));
      acc0 = fma(xColumn(0u, i - s), w, acc0);
      if (ROWS > 4u) { acc1 = fma(xColumn(4u, i - s), w, acc1); }
    }
  }
  storePartials(0u, t, acc0);
  storePartials(4u, t, acc1);
  workgroupBarrier();
  // ROWS·OUTS sums; fewer threads than that (many rows, few lanes) take several each.
  for (var r = t; r < ROWS * OUTS; r += WG) {
    let m = r / OUTS;
    let o = r % OUTS;
    let no = (wg.y * nwg.x + wg.x) * OUTS + o;
    if (no >= p.N) { continue; }
    var sum = 0.0;
    for (var l = 0u; l < LANES; l++) { sum += partial[m * WG + o * LANES + l]; }
    let yi = p.yOffset + m * p.yRowStride + no;
    var v = p.alpha * sum;
    // beta == 0 must not read y: a fresh pooled buffer may hold NaN bit patterns.
    if (p.beta != 0.0) { v += p.beta * y[yi]; }
    y[yi] = v;
  }
}

