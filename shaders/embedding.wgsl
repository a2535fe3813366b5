// Token embedding: out[n, :] = W[ids[n], :]·scale (W [vocab, hidden] f32/bf16/f16 → f32; scale is
// 1 except for Gemma's √hidden, modeling_gemma3.py Gemma3TextScaledWordEmbedding), with
// optional NEFTune noise (transformers trainer_utils `neftune_post_forward_hook`: in training,
// out += U(−mag, mag) with mag = alpha/√(seqLen·hidden)). The noise comes from a counter-based
// hash of (seed, stream, element index), so it is reproducible and needs no RNG state.
// Backward without atomics: the host groups token positions by id (CSR: uniqueIds, offsets,
// positions) and each thread sums one column of one unique id's rows, in token order.
#include "packed16"
const WG: u32 = 256u;
const W_KIND: u32 = {{W_KIND}};

struct Params {
  tokens: u32, hidden: u32, vocab: u32, uniqueCount: u32,
  noiseMag: f32, seed: u32, stream: u32, accumulate: u32,
  // noiseFirst = 1: the noise is added before the scale (Gemma 2 scales in the model's forward,
  // after the hooked embedding module); 0: after it (Gemma 3's scale is inside the module).
  scale: f32, noiseFirst: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// ---- forward -------------------------------------------------------------------------------
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// PCG-RXS-M-XS 32-bit output permutation as a stateless hash (Jarzynski & Olano, "Hash
// Functions for GPU Rendering", JCGT 2020).
fn pcgHash(x: u32) -> u32 {
  let state = x * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

/** Uniform in [−1, 1) from 24 random bits. */
fn noiseAt(i: u32) -> f32 {
  let key = pcgHash(p.seed ^ pcgHash(p.stream));
  let bits = pcgHash(pcgHash(i) ^ key);
  return f32(bits >> 8u) * (2.0 / 16777216.0) - 1.0;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let i = (wg.y * nwg.x + wg.x) * WG + lid;
  if (i >= p.tokens * p.hidden) { return; }
  let n = i / p.hidden;
  let h = i % p.hidden;
  let id = ids[n];
  var v: f32;
  if (id < 0 || u32(id) >= p.vocab) {
    // A token id outside the vocabulary (tokenizer/model mismatch) must be loud, not a zero row:
    // a quiet NaN (built from the runtime id, since WGSL rejects NaN constant expressions).
    v = bitcast<f32>(0x7fc00000u | (u32(id) & 0xffffu));
  } else {
    let wi = u32(id) * p.hidden + h;
    v = decodeWeight(W_KIND, wi, w[wordIndex(W_KIND, wi)]);
  }
  if (p.noiseMag != 0.0 && p.noiseFirst != 0u) { v += p.noiseMag * noiseAt(i); }
  v *= p.scale;
  if (p.noiseMag != 0.0 && p.noiseFirst == 0u) { v += p.noiseMag * noiseAt(i); }
  out[i] = v;
}

// ---- backward: dW[id, :] (= or +=) scale · Σ over the token positions holding id of dOut[pos, :] --
@group(0) @binding(1) var<storage, read> dOut: array<f32>;
@group(0) @binding(2) var<storage, read> uniqueIds: array<i32>;
@group(0) @binding(3) var<storage, read> offsets: array<i32>;
@group(0) @binding(4) var<storage, read> positions: array<i32>;
@group(0) @binding(5) var<storage, read_write> dW: array<f32>;

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let u = wg.z * nwg.y + wg.y;
  let h = wg.x * WG + lid;
  if (u >= p.uniqueCount || h >= p.hidden) { return; }
  let id = u32(uniqueIds[u]);
  var acc = 0.0;
  for (var j = offsets[u]; j < offsets[u + 1u]; j++) {
    acc += dOut[u32(positions[j]) * p.hidden + h];
  }
  acc *= p.scale;
  let o = id * p.hidden + h;
  if (p.accumulate != 0u) { acc += dW[o]; }
  dW[o] = acc;
}
