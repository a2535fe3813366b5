// Global gradient L2 norm and clipping, torch.nn.utils.clip_grad_norm_ semantics
// (torch/nn/utils/clip_grad.py): total = ‖g‖₂ over every gradient element,
// clipCoef = min(1, maxNorm/(total + 1e-6)); g *= clipCoef.
//   partials  one range of a gradient arena → Σ g² per workgroup (grid-stride, Kahan per thread)
//   finalize  Σ partials → stats[statsIndex ..] = {norm, clipCoef, Σg², nonFinite}
//   clip      g *= stats[statsIndex + 1] in place (for callers that need clipped gradients;
//             the AdamW kernel reads clipCoef itself, so training needs no clip pass)
// No atomics: every workgroup writes its own partial; one workgroup reduces them.
// Tree or subgroup reductions (include/reduce, include/reduce_subgroup): src/engine/ops/reduce.ts picks.
#include "{{REDUCE}}"
const WG: u32 = 256u;

struct Params {
  offset: u32, count: u32, partialOffset: u32, partialCount: u32,
  maxNorm: f32, statsIndex: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// ---- pass 1 -------------------------------------------------------------------------------
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read_write> partialsOut: array<f32>;

@compute @workgroup_size(WG)
fn partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let stride = nwg.x * WG;
  var sum = 0.0;
  var comp = 0.0; // Kahan compensation: arenas hold millions of elements
  for (var i = wg.x * WG + lid; i < p.count; i += stride) {
    let g = grads[p.offset + i];
    let yk = g * g - comp;
    let t = sum + yk;
    comp = (t - sum) - yk;
    sum = t;
  }
  let total = workgroupSum(sum, lid);
  if (lid == 0u) { partialsOut[p.partialOffset + wg.x] = total; }
}

// ---- pass 2 -------------------------------------------------------------------------------
@group(0) @binding(1) var<storage, read> partialsIn: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;

fn isFinite(x: f32) -> bool {
  return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(WG)
fn finalize(@builtin(local_invocation_index) lid: u32) {
  var sum = 0.0;
  for (var i = lid; i < p.partialCount; i += WG) { sum += partialsIn[i]; }
  let sumSq = workgroupSum(sum, lid);
  if (lid == 0u) {
    let norm = sqrt(sumSq);
    let finite = isFinite(sumSq);
    var coef = 1.0;
    if (!finite) {
      coef = 0.0;
    } else if (p.maxNorm > 0.0) {
      coef = min(1.0, p.maxNorm / (norm + 1e-6));
    }
    stats[p.statsIndex] = norm;
    stats[p.statsIndex + 1u] = coef;
    stats[p.statsIndex + 2u] = sumSq;
    stats[p.statsIndex + 3u] = select(1.0, 0.0, finite);
  }
}

// ---- optional in-place clip -----------------------------------------------------------------
@group(0) @binding(1) var<storage, read_write> gradsRw: array<f32>;
@group(0) @binding(2) var<storage, read> statsIn: array<f32>;

@compute @workgroup_size(WG)
fn clip(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wg.y * nwg.x + wg.x) * WG + lid;
  if (i >= p.count) { return; }
  gradsRw[p.offset + i] *= statsIn[p.statsIndex + 1u];
}
