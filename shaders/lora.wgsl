// LoRA dropout (PEFT: dropout only on the adapter's input, inverted scaling 1/(1−p) like torch).
// The keep mask is k2Hash(seed, step, module, element) ≥ dropThreshold, recomputed in the backward.
//   dropout      out[i] = keep(i) ? x[i]·scale : 0            (x, out: [N, in])
//   dropout_add  dx[i] += keep(i) ? g[i]·scale : 0            (the adapter's share of dX)
#include "k2_hash"

struct Params {
  numel: u32, seed: u32, step: u32, moduleId: u32,
  dropThreshold: u32, scale: f32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * 256u + lid;
}

fn keepScale(i: u32) -> f32 {
  return select(0.0, p.scale, k2Hash(p.seed, p.step, p.moduleId, i) >= p.dropThreshold);
}

@compute @workgroup_size(256)
fn dropout(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= p.numel) { return; }
  dst[i] = src[i] * keepScale(i);
}

@compute @workgroup_size(256)
fn dropout_add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= p.numel) { return; }
  dst[i] += src[i] * keepScale(i);
}
