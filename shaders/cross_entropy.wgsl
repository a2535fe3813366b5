// Fused log-softmax + NLL over the vocabulary, f32 (torch.nn.functional.cross_entropy with
// ignore_index, as transformers' ForCausalLMLoss uses it). One workgroup per token row:
//   pass 1: each thread runs an online max/sum over its strided slice of the row, then the
//           workgroup merges the (max, sum) pairs: lse = M + log Σ e^(x−M);
//   loss_row = lse − x[label] (0 for label == ignoreIndex; NaN for a label outside [0, V));
//   pass 2 (writeGrad): logits ← (softmax − onehot(label))·scale IN PLACE (zeros for ignored rows).
// `sumLoss` then adds scale·Σ rows of rowLoss into lossAccum[accIndex] with one workgroup
// (rowLoss holds the per-workgroup partials, so no atomics).
// softcap > 0: the logits were capped to c = softcap·tanh(x / softcap) (shaders/softcap.wgsl,
// Gemma 2's final_logit_softcapping); the gradient is taken back through the cap as
// dx = dc·(1 − (c / softcap)²) (tanh′ = 1 − tanh²), so it is dL/d(raw logits).
// The scale is a number, one value read from a buffer (1/labels of the accumulation window, SFT),
// or one value per row (scaleFromBuffer = 2: scaleBuf[scaleIndex + labelOffset + row]): preference
// losses weight each token's log-prob by dL/d(its sequence's log-prob), so
// dlogits = (softmax − onehot)·w_row with w_row = −dL/dlogp_seq (TRL concatenated_forward).
// Tree or subgroup reductions (include/reduce, include/reduce_subgroup): src/engine/ops/reduce.ts picks.
#include "{{REDUCE}}"
const WG: u32 = 256u;

struct Params {
  rows: u32, vocab: u32, scaleIndex: u32, writeGrad: u32,
  ignoreIndex: i32, accumulate: u32, accIndex: u32, scaleFromBuffer: u32,
  scaleValue: f32, labelOffset: u32, lossOffset: u32, softcap: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

// Lowest finite f32: a start value for the running max that keeps exp(x − m) finite even
// for rows holding −inf logits.
const LOWEST: f32 = -3.4028234663852886e38;

// ---- per-row loss and gradient -----------------------------------------------------------------
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> scaleBuf: array<f32>;
@group(0) @binding(4) var<storage, read_write> rowLoss: array<f32>;

fn lossScale(row: u32) -> f32 {
  if (p.scaleFromBuffer == 2u) { return scaleBuf[p.scaleIndex + p.labelOffset + row]; }
  return select(p.scaleValue, scaleBuf[p.scaleIndex], p.scaleFromBuffer != 0u);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = wg.y * nwg.x + wg.x;
  if (row >= p.rows) { return; } // uniform per workgroup
  let base = row * p.vocab;
  let label = labels[p.labelOffset + row];
  let ignored = label == p.ignoreIndex;
  let valid = !ignored && label >= 0 && u32(label) < p.vocab;
  if (ignored) {
    // Prompt / padding rows (often half of an SFT batch): no softmax needed. `ignored` is
    // uniform across the workgroup, so returning here keeps the barriers below uniform.
    if (lid == 0u) { rowLoss[p.lossOffset + row] = 0.0; }
    if (p.writeGrad != 0u) {
      for (var v = lid; v < p.vocab; v += WG) { logits[base + v] = 0.0; }
    }
    return;
  }
  // Read the label's logit before any thread can overwrite it (the reductions below barrier).
  var xLabel = 0.0;
  if (valid) { xLabel = logits[base + u32(label)]; }

  var m = LOWEST;
  var s = 0.0;
  for (var v = lid; v < p.vocab; v += WG) {
    let x = logits[base + v];
    if (x > m) {
      s = s * exp(m - x) + 1.0;
      m = x;
    } else {
      s += exp(x - m);
    }
  }
  let rowMax = workgroupMax(m, lid);
  let rowSum = workgroupSum(s * exp(m - rowMax), lid);
  let lse = rowMax + log(rowSum);

  if (lid == 0u) {
    var loss = lse - xLabel;
    if (!valid) { loss = bitcast<f32>(0x7fc00000u | u32(label & 0xffff)); }
    rowLoss[p.lossOffset + row] = loss;
  }
  if (p.writeGrad == 0u) { return; }
  let scale = lossScale(row);
  for (var v = lid; v < p.vocab; v += WG) {
    let x = logits[base + v];
    var g = exp(x - lse);
    if (i32(v) == label) { g -= 1.0; }
    if (p.softcap > 0.0) {
      let t = x / p.softcap;
      g *= 1.0 - t * t;
    }
    logits[base + v] = g * scale;
  }
}

// ---- Σ rows → scalar ----------------------------------------------------------------------------
@group(0) @binding(1) var<storage, read> rowLossIn: array<f32>;
@group(0) @binding(2) var<storage, read> scaleBuf2: array<f32>;
@group(0) @binding(3) var<storage, read_write> lossAccum: array<f32>;

@compute @workgroup_size(WG)
fn sumLoss(@builtin(local_invocation_index) lid: u32) {
  let perRow = p.scaleFromBuffer == 2u;
  var acc = 0.0;
  for (var r = lid; r < p.rows; r += WG) {
    var x = rowLossIn[p.lossOffset + r];
    if (perRow) { x *= scaleBuf2[p.scaleIndex + p.labelOffset + r]; }
    acc += x;
  }
  let total = workgroupSum(acc, lid);
  if (lid == 0u) {
    var scale = select(p.scaleValue, scaleBuf2[p.scaleIndex], p.scaleFromBuffer != 0u);
    if (perRow) { scale = 1.0; }
    var v = total * scale;
    if (p.accumulate != 0u) { v += lossAccum[p.accIndex]; }
    lossAccum[p.accIndex] = v;
  }
}
