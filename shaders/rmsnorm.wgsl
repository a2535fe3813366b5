// RMSNorm (transformers LlamaRMSNorm / Qwen2RMSNorm, modeling_llama.py): in f32,
//   rstd = 1/√(mean(x²) + eps),  y = (w + offset) ⊙ (x·rstd).
// offset is 0 for Llama/Qwen and 1 for Gemma (Gemma3RMSNorm, modeling_gemma3.py: the stored weight
// is centred on 0 and the scale is 1 + w, formed in f32); the weight gradient does not depend on it.
// Rows are tokens (or token·head for Qwen3 q_norm/k_norm); width is the normalised axis.
// Entry points (each with its own bindings; @binding(0) is always the Params uniform):
//   forward         x, w → y (= or +=), rstd[rows]    one workgroup per row (+=: Gemma's normed
//                                                     sublayer output added onto the residual)
//   backwardInput   x, w, dy, rstd → dx (= or +=)     one workgroup per row
//   weightPartials  x, dy, rstd → partials[slab, width]: Σ over a slab of rows of dy·x·rstd
//   weightReduce    partials → dw (= or +=)           sums the slabs per column (no atomics)
// (the weight passes give one thread per column: WG columns per workgroup)
// Tree or subgroup reductions (include/reduce, include/reduce_subgroup): src/engine/ops/reduce.ts picks.
#include "{{REDUCE}}"
#include "packed16"
// Threads per row: a power of two from 32 to 256 picked by the wrapper from the width (about 8
// elements per thread), so narrow rows (q_norm/k_norm: 64–128) don't idle most of a workgroup.
const WG: u32 = {{WG}};

const W_KIND: u32 = {{W_KIND}};

struct Params {
  rows: u32, width: u32, eps: f32, accumulate: u32,
  rowsPerSlab: u32, slabs: u32, offset: f32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

fn weightAt(i: u32) -> f32 {
  return decodeWeight(W_KIND, i, w[wordIndex(W_KIND, i)]) + p.offset;
}

fn rowIndex(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wg.y * nwg.x + wg.x;
}

// ---- forward -------------------------------------------------------------------------
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> rstdOut: array<f32>;

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let row = rowIndex(wg, nwg);
  if (row >= p.rows) { return; } // uniform per workgroup, so the barriers below stay uniform
  let base = row * p.width;
  var ss = 0.0;
  for (var c = lid; c < p.width; c += WG) {
    let v = x[base + c];
    ss = fma(v, v, ss);
  }
  let total = workgroupSum(ss, lid);
  let r = inverseSqrt(total / f32(p.width) + p.eps);
  for (var c = lid; c < p.width; c += WG) {
    // Same rounding order as transformers: (x·rstd) first, then the weight.
    var v = weightAt(c) * (x[base + c] * r);
    // accumulate == 0 must not read y: a fresh pooled buffer may hold NaN bit patterns.
    if (p.accumulate != 0u) { v += y[base + c]; }
    y[base + c] = v;
  }
  if (lid == 0u) { rstdOut[row] = r; }
}

// ---- backward, input gradient ---------------------------------------------------------
// dx_j = r·w_j·dy_j − x_j · r³/width · Σ_k dy_k·w_k·x_k
@group(0) @binding(3) var<storage, read> dyIn: array<f32>;
@group(0) @binding(4) var<storage, read> rstdIn: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(WG)
fn backwardInput(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let row = rowIndex(wg, nwg);
  if (row >= p.rows) { return; }
  let base = row * p.width;
  var dot = 0.0;
  for (var c = lid; c < p.width; c += WG) {
    dot = fma(dyIn[base + c] * weightAt(c), x[base + c], dot);
  }
  let total = workgroupSum(dot, lid);
  let r = rstdIn[row];
  let coef = r * r * r * total / f32(p.width);
  for (var c = lid; c < p.width; c += WG) {
    let i = base + c;
    var g = r * weightAt(c) * dyIn[i] - coef * x[i];
    // accumulate == 0 must not read dx: a fresh pooled buffer may hold NaN bit patterns.
    if (p.accumulate != 0u) { g += dx[i]; }
    dx[i] = g;
  }
}

// ---- backward, weight gradient: pass 1 (column partial sums per slab of rows) -------------
@group(0) @binding(2) var<storage, read> dyW: array<f32>;
@group(0) @binding(3) var<storage, read> rstdW: array<f32>;
@group(0) @binding(4) var<storage, read_write> partialsOut: array<f32>;

@compute @workgroup_size(WG)
fn weightPartials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let c = wg.x * WG + lid;
  let slab = wg.y;
  if (c >= p.width || slab >= p.slabs) { return; }
  let r0 = slab * p.rowsPerSlab;
  let r1 = min(r0 + p.rowsPerSlab, p.rows);
  var acc = 0.0;
  for (var r = r0; r < r1; r++) {
    let i = r * p.width + c;
    acc = fma(dyW[i], x[i] * rstdW[r], acc);
  }
  partialsOut[slab * p.width + c] = acc;
}

// ---- backward, weight gradient: pass 2 (sum the slabs) ------------------------------------
@group(0) @binding(1) var<storage, read> partialsIn: array<f32>;
@group(0) @binding(2) var<storage, read_write> dw: array<f32>;

@compute @workgroup_size(WG)
fn weightReduce(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= p.width) { return; }
  var acc = 0.0;
  for (var s = 0u; s < p.slabs; s++) { acc += partialsIn[s * p.width + c]; }
  if (p.accumulate != 0u) { acc += dw[c]; }
  dw[c] = acc;
}
