// Per-sequence log-probabilities of the label tokens (TRL / LLaMA-Factory get_batch_logps):
// for each row b of a [B, T] batch, Σ log p(label) over the positions whose shifted label is not
// ignored, and how many there are (valid_length). The per-token log-prob is −rowLoss, the NLL the
// cross-entropy kernel wrote (shaders/cross_entropy.wgsl); rows whose label is ignored may hold
// anything (the loss only computes logits of labelled rows) and are skipped here.
// One workgroup per sequence; out[2·b] = Σ logp, out[2·b + 1] = count (f32, exact below 2^24).
// Tree or subgroup reductions (include/reduce, include/reduce_subgroup): src/engine/ops/reduce.ts picks.
#include "{{REDUCE}}"
const WG: u32 = 256u;

struct Params {
  sequences: u32, seqLen: u32, ignoreIndex: i32, outOffset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> rowLoss: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn sequenceLogps(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let b = wg.y * nwg.x + wg.x;
  if (b >= p.sequences) { return; } // uniform per workgroup
  let base = b * p.seqLen;
  var sum = 0.0;
  var count = 0.0;
  for (var t = lid; t < p.seqLen; t += WG) {
    if (labels[base + t] != p.ignoreIndex) {
      sum -= rowLoss[base + t];
      count += 1.0;
    }
  }
  let total = workgroupSum(sum, lid);
  let n = workgroupSum(count, lid);
  if (lid == 0u) {
    out[p.outOffset + 2u * b] = total;
    out[p.outOffset + 2u * b + 1u] = n;
  }
}
