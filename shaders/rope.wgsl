// Rotary position embedding, half-split layout (transformers modeling_llama.py
// `apply_rotary_pos_emb` / `rotate_half`): for each head vector x = [x₁, x₂, x_pass] (R/2, R/2
// and D − R elements, R = rotary dim),
//   [x₁, x₂]' = [x₁, x₂]·cos + rotate_half([x₁, x₂])·sin,  rotate_half([x₁, x₂]) = [−x₂, x₁],
//   x_pass untouched (partial rotary: modeling_phi3.py rotates q[..., :rotary_dim] only; R = D elsewhere),
//   θ_i = f32(position) · invFreq[i] (one f32 product, as transformers' float32 matmul),
//   cos/sin scaled by attentionScaling (1 for default / linear / dynamic / llama3 rope, LongRoPE's
//   attention factor for longrope).
// The backward is the inverse rotation (θ → −θ): DIRECTION = −1 maps dL/dx' to dL/dx.
// IN PLACE on Q [N, Hq·D] and K [N, Hkv·D] (row strides allow views into wider buffers).
// One thread per (token, i < R/2): cos/sin computed once, applied to every Q and K head.

struct Params {
  tokens: u32, qHeads: u32, kvHeads: u32, halfDim: u32,
  qRowStride: u32, kRowStride: u32, qOffset: u32, kOffset: u32,
  direction: f32, attentionScaling: f32, headDim: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> q: array<f32>;
@group(0) @binding(2) var<storage, read_write> k: array<f32>;
@group(0) @binding(3) var<storage, read> positionIds: array<i32>;
@group(0) @binding(4) var<storage, read> invFreq: array<f32>;

// π/2 split into four 6-bit pieces and a 24-bit tail (≈ 54 bits in all): for |k| < 2^18 every
// product k·Cᵢ of a short piece is exact in f32, so θ − k·π/2 keeps full precision even for
// θ ~ 10^5 rad (position 131072 × invFreq[0] = 1) without relying on a fused multiply-add.
const PIO2_1: f32 = 1.5625;
const PIO2_2: f32 = 0.008056640625;
const PIO2_3: f32 = 0.00023651123046875;
const PIO2_4: f32 = 3.159046173095703e-06;
const PIO2_5: f32 = 1.5893254712295857e-08;
const TWO_OVER_PI: f32 = 0.6366197723675814;

// sin and cos of θ to ~1 ulp, independent of the GPU's native sin/cos (whose accuracy WGSL only
// bounds on [−π, π] and which many GPUs compute poorly for large arguments). Minimax
// polynomials on [−π/4, π/4] (the classic Cephes single-precision sinf/cosf coefficients).
fn sinCos(theta: f32) -> vec2<f32> {
  let kf = round(theta * TWO_OVER_PI);
  var r = theta - kf * PIO2_1;
  r = r - kf * PIO2_2;
  r = r - kf * PIO2_3;
  r = r - kf * PIO2_4;
  r = r - kf * PIO2_5;
  let z = r * r;
  let s = r + r * z * ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1);
  let c = 1.0 - 0.5 * z + z * z * ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2);
  switch (u32(i32(kf)) & 3u) {
    case 0u: { return vec2<f32>(s, c); }
    case 1u: { return vec2<f32>(c, -s); }
    case 2u: { return vec2<f32>(-s, -c); }
    default: { return vec2<f32>(-c, s); }
  }
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let idx = (wg.y * nwg.x + wg.x) * 64u + lid;
  if (idx >= p.tokens * p.halfDim) { return; }
  let n = idx / p.halfDim;
  let i = idx % p.halfDim;
  let theta = f32(positionIds[n]) * invFreq[i];
  let sc = sinCos(theta);
  let cosT = sc.y * p.attentionScaling;
  // The backward rotates by −θ: only sin changes sign.
  let sinT = sc.x * p.attentionScaling * p.direction;
  let d = p.headDim;
  let qBase = p.qOffset + n * p.qRowStride + i;
  for (var h = 0u; h < p.qHeads; h++) {
    let j = qBase + h * d;
    let x1 = q[j];
    let x2 = q[j + p.halfDim];
    q[j] = x1 * cosT - x2 * sinT;
    q[j + p.halfDim] = x2 * cosT + x1 * sinT;
  }
  let kBase = p.kOffset + n * p.kRowStride + i;
  for (var h = 0u; h < p.kvHeads; h++) {
    let j = kBase + h * d;
    let x1 = k[j];
    let x2 = k[j + p.halfDim];
    k[j] = x1 * cosT - x2 * sinT;
    k[j + p.halfDim] = x2 * cosT + x1 * sinT;
  }
}
