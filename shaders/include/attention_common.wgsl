// Shared by shaders/attention.wgsl and shaders/attention_backward.wgsl.
// Layouts (token-major, f32, read as vec4 so head_dim must be a multiple of 4):
//   Q, O, dO, dQ [N, Hq, D]   K, V, dK, dV [Nk, Hkv, D]   LSE, rowDot [Hq, N]
//   segmentIds i32[Nk], indexed by key position; query i sits at key position queryOffset + i.
// Masking rule: key m is visible to query i at position p = queryOffset + i iff m <= p, with a
// sliding window (window > 0) also p - m < window (transformers masking_utils
// sliding_window_overlay: the query sees `window` keys including itself), and, with segments,
// seg[m] == seg[p]; a query whose own id is < 0 is padding (sees nothing, O = 0, LSE = 0, no
// gradient). Keys with id < 0 can only match padding queries, which see nothing.
// Soft-capping (capLog2 > 0, Gemma 2: modeling_gemma2.py eager_attention_forward): the scaled
// score s becomes softcap·tanh(s / softcap) before the mask and softmax; LSE is that of the
// capped scores.
// GQA: query head h reads KV head h / group (group = Hq / Hkv consecutive query heads).
struct AttnParams {
  queries: u32, keys: u32, qHeads: u32, kvHeads: u32,
  group: u32, queryOffset: u32, useSegments: u32, tilesX: u32,
  // softmax scale · log2(e): the kernels work in base 2 (exp2) and save LSE in natural log units
  scaleLog2: f32, scale: f32, tiles: u32, splits: u32,
  // Forward only: keys per split (a multiple of the key block) when splits > 1 (decode).
  keySplit: u32,
  // Sliding window in keys (0: none; ≤ keys, so key + window cannot overflow).
  window: u32,
  // softcap · log2(e) (0: no capping): scores are held in base 2, where the cap scales alike.
  capLog2: f32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> P: AttnParams;

const LOG2E: f32 = 1.4426950408889634;
const LN2: f32 = 0.6931471805599453;
// Score of a masked pair; valid scores are finite and far above it.
const MASKED: f32 = -3.0e38;
const MASK_TEST: f32 = -1.0e38;

// Tile index of a workgroup whose grid was folded as x + z·tilesX (each dimension ≤ 65535).
fn tileOf(wg: vec3<u32>) -> u32 {
  return wg.z * P.tilesX + wg.x;
}

// Causal and sliding-window part of the masking rule for key position `key`, query position `pos`.
fn keyInWindow(key: u32, pos: u32) -> bool {
  return key <= pos && (P.window == 0u || key + P.window > pos);
}

// First key any query at position ≥ `pos` can see (the window's left edge; 0 without a window).
fn windowStart(pos: u32) -> u32 {
  if (P.window == 0u || pos < P.window) { return 0u; }
  return pos + 1u - P.window;
}

// tanh of a base-2 score over the base-2 cap (= tanh(s / softcap) in natural units). The argument
// is clamped: tanh(9) rounds to 1 in f32, and some backends build tanh from exp, which overflows
// to inf/inf = NaN for large arguments.
fn capTanh(s2: f32) -> f32 {
  return tanh(clamp(s2 / P.capLog2, -9.0, 9.0));
}

// Base-2 score after soft-capping (identity when capping is off).
fn capScore(s2: f32) -> f32 {
  if (P.capLog2 > 0.0) { return P.capLog2 * capTanh(s2); }
  return s2;
}
