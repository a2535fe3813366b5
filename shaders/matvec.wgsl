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

// y[m, n] = alpha·sum + beta·y[m, n].
fn storeY(m: u32, n: u32, sum: f32) {
  let yi = p.yOffset + m * p.yRowStride + n;
  var v = p.alpha * sum;
  // beta == 0 must not read y: a fresh pooled buffer may hold NaN bit patterns.
  if (p.beta != 0.0) { v += p.beta * y[yi]; }
  y[yi] = v;
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
    storeY(m, no, sum);
  }
}


// ---- quad: four outputs per thread, each thread walking its whole K alone ----
// No workgroup memory and no barrier (CPU-emulated adapters pay dearly for both), and every x
// element read serves four weight rows instead of one. The x rows are written out like the
// accumulators above: q<m> holds row m's outputs n0..n0+3.
struct Quad8 {
  q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>, q3: vec4<f32>,
  q4: vec4<f32>, q5: vec4<f32>, q6: vec4<f32>, q7: vec4<f32>,
}

// Row m of x against octet k/8 of four weight rows.
fn quadDots(m: u32, k: u32, w0: Octet, w1: Octet, w2: Octet, w3: Octet) -> vec4<f32> {
  let lo = xQuad(m, k);
  let hi = xQuad(m, k + 4u);
  return vec4<f32>(
    dot(lo, w0.lo) + dot(hi, w0.hi), dot(lo, w1.lo) + dot(hi, w1.hi),
    dot(lo, w2.lo) + dot(hi, w2.hi), dot(lo, w3.lo) + dot(hi, w3.hi));
}

fn quadOctetStep(k: u32, w0: Octet, w1: Octet, w2: Octet, w3: Octet, acc: ptr<function, Quad8>) {
  (*acc).q0 += quadDots(0u, k, w0, w1, w2, w3);
  if (ROWS > 1u) { (*acc).q1 += quadDots(1u, k, w0, w1, w2, w3); }
  if (ROWS > 2u) { (*acc).q2 += quadDots(2u, k, w0, w1, w2, w3); }
  if (ROWS > 3u) { (*acc).q3 += quadDots(3u, k, w0, w1, w2, w3); }
  if (ROWS > 4u) { (*acc).q4 += quadDots(4u, k, w0, w1, w2, w3); }
  if (ROWS > 5u) { (*acc).q5 += quadDots(5u, k, w0, w1, w2, w3); }
  if (ROWS > 6u) { (*acc).q6 += quadDots(6u, k, w0, w1, w2, w3); }
  if (ROWS > 7u) { (*acc).q7 += quadDots(7u, k, w0, w1, w2, w3); }
}

fn quadElementStep(k: u32, w: vec4<f32>, acc: ptr<function, Quad8>) {
  (*acc).q0 = fma(vec4<f32>(xAt(0u, k)), w, (*acc).q0);
  if (ROWS > 1u) { (*acc).q1 = fma(vec4<f32>(xAt(1u, k)), w, (*acc).q1); }
  if (ROWS > 2u) { (*acc).q2 = fma(vec4<f32>(xAt(2u, k)), w, (*acc).q2); }
  if (ROWS > 3u) { (*acc).q3 = fma(vec4<f32>(xAt(3u, k)), w, (*acc).q3); }
  if (ROWS > 4u) { (*acc).q4 = fma(vec4<f32>(xAt(4u, k)), w, (*acc).q4); }
  if (ROWS > 5u) { (*acc).q5 = fma(vec4<f32>(xAt(5u, k)), w, (*acc).q5); }
  if (ROWS > 6u) { (*acc).q6 = fma(vec4<f32>(xAt(6u, k)), w, (*acc).q6); }
  if (ROWS > 7u) { (*acc).q7 = fma(vec4<f32>(xAt(7u, k)), w, (*acc).q7); }
}

fn storeQuadRow(m: u32, n0: u32, v: vec4<f32>) {
  if (m >= ROWS) { return; }
  for (var j = 0u; j < 4u; j++) {
    if (n0 + j >= p.N) { return; }
    storeY(m, n0 + j, v[j]);
  }
}

@compute @workgroup_size(WG)
fn matvecQuad(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) t: u32,
) {
  let n0 = ((wg.y * nwg.x + wg.x) * WG + t) * 4u;
  if (n0 >= p.N) { return; }
  // Rows past the last output read the last one (always in bounds) and are never stored.
  let s0 = min(n0, p.N - 1u) * p.K;
  let s1 = min(n0 + 1u, p.N - 1u) * p.K;
  let s2 = min(n0 + 2u, p.N - 1u) * p.K;
  let s3 = min(n0 + 3u, p.N - 1u) * p.K;
  var acc: Quad8;
  if ((p.K & 7u) == 0u) {
    // Every row starts on an octet: whole octets only.
    let octets = p.K >> 3u;
    for (var j = 0u; j < octets; j++) {
      quadOctetStep(j * 8u, weightOctet((s0 >> 3u) + j), weightOctet((s1 >> 3u) + j),
        weightOctet((s2 >> 3u) + j), weightOctet((s3 >> 3u) + j), &acc);
    }
  } else {
    for (var k = 0u; k < p.K; k++) {
      let w = vec4<f32>(weightAt(s0 + k), weightAt(s1 + k), weightAt(s2 + k), weightAt(s3 + k));
      quadElementStep(k, w, &acc);
    }
  }
  storeQuadRow(0u, n0, acc.q0);
  storeQuadRow(1u, n0, acc.q1);
  storeQuadRow(2u, n0, acc.q2);
  storeQuadRow(3u, n0, acc.q3);
  storeQuadRow(4u, n0, acc.q4);
  storeQuadRow(5u, n0, acc.q5);
  storeQuadRow(6u, n0, acc.q6);
  storeQuadRow(7u, n0, acc.q7);
}
