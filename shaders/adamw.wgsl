// AdamW step over every trainable tensor in ONE dispatch, exactly torch.optim.AdamW
// (torch/optim/adamw.py, _single_tensor_adamw; the algorithm in the torch.optim.AdamW docs):
//   g = grad · clipCoef                      (clip_grad_norm_'s in-place scaling)
//   p ← p · (1 − lr·wd)                      (decoupled weight decay)
//   m ← β1·m + (1−β1)·g ;  v ← β2·v + (1−β2)·g²
//   p ← p − (lr/(1−β1ᵗ)) · m / (√v/√(1−β2ᵗ) + eps)
// The parameters, gradients and both moments live in flat f32 arenas with one layout. The host
// cuts every tensor segment into blocks of ≤ BLOCK elements: blocks[b] = (start, end, group, 0);
// one workgroup updates one block. Per-group factors (1 − lr·wd, lr/(1−β1ᵗ)) are computed on
// the host in f64 every step and arrive in the uniform, as torch computes them in Python.
// clipCoef (and the non-finite flag) are read from the gradient-stats block that grad_norm
// wrote, so clipping needs no readback and no extra pass.
const WG: u32 = 256u;
const MAX_GROUPS: u32 = 16u;

struct Params {
  blockCount: u32, useStats: u32, statsIndex: u32, zeroGrads: u32,
  beta1: f32, beta2: f32, oneMinusBeta1: f32, oneMinusBeta2: f32,
  eps: f32, bc2Sqrt: f32, skipNonFinite: u32, _pad0: u32,
  // x = 1 − lr·wd, y = lr/(1 − β1ᵗ) per parameter group.
  groups: array<vec4<f32>, MAX_GROUPS>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> expAvg: array<f32>;
@group(0) @binding(4) var<storage, read_write> expAvgSq: array<f32>;
@group(0) @binding(5) var<storage, read> blocks: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read> stats: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let b = wg.y * nwg.x + wg.x;
  if (b >= p.blockCount) { return; }
  let block = blocks[b];
  var coef = 1.0;
  var skip = false;
  if (p.useStats != 0u) {
    coef = stats[p.statsIndex + 1u];
    skip = p.skipNonFinite != 0u && stats[p.statsIndex + 3u] != 0.0;
  }
  let grp = p.groups[min(block.z, MAX_GROUPS - 1u)];
  for (var i = block.x + lid; i < block.y; i += WG) {
    if (!skip) {
      let g = grads[i] * coef;
      let m = expAvg[i] * p.beta1 + g * p.oneMinusBeta1;
      let v = expAvgSq[i] * p.beta2 + g * g * p.oneMinusBeta2;
      expAvg[i] = m;
      expAvgSq[i] = v;
      let denom = sqrt(v) / p.bc2Sqrt + p.eps;
      params[i] = params[i] * grp.x - grp.y * (m / denom);
    }
    if (p.zeroGrads != 0u) { grads[i] = 0.0; }
  }
}
