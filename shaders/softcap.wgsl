// Logit soft-capping in place: x ← cap·tanh(x / cap) (transformers modeling_gemma2.py
// Gemma2ForCausalLM: final_logit_softcapping; logits / cap → tanh → · cap). The backward is
// folded into cross_entropy.wgsl (dx = dc·(1 − (c / cap)²) from the capped value c).
// tanh(z): a short odd Taylor series for |z| < 0.25 (error < 2e-9·|z|, so small logits keep their
// relative precision), 1 − 2/(e^{2|z|} + 1) with the sign above (no cancellation there; e^{2|z|}
// → ∞ gives exactly 1, never NaN).
const WG: u32 = 256u;

struct Params {
  n: u32, cap: f32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

fn tanhAccurate(z: f32) -> f32 {
  let a = abs(z);
  if (a < 0.25) {
    let z2 = z * z;
    // z − z³/3 + 2z⁵/15 − 17z⁷/315 + 62z⁹/2835
    return z * (1.0 + z2 * (-1.0 / 3.0 + z2 * (2.0 / 15.0 + z2 * (-17.0 / 315.0 + z2 * (62.0 / 2835.0)))));
  }
  let t = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
  return select(-t, t, z >= 0.0);
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let i = (wg.y * nwg.x + wg.x) * WG + lid;
  if (i >= p.n) { return; }
  x[i] = p.cap * tanhAccurate(x[i] / p.cap);
}
