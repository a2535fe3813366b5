// Shared by shaders/attention.wgsl and shaders/attention_backward.wgsl.
// Layouts (token-major, f32, read as vec4 so head_dim must be a multiple of 4):
//   Q, O, dO, dQ [N, Hq, D]   K, V, dK, dV [Nk, Hkv, D]   LSE, rowDot [Hq, N]
//   segmentIds i32[Nk], indexed by key position; query i sits at key position queryOffset + i.
// Masking rule: key m is visible to query i iff m <= queryOffset + i and, with segments,
// seg[m] == seg[queryOffset + i]; a query whose own id is < 0 is padding (sees nothing, O = 0,
// LSE = 0, no gradient). Keys with id < 0 can only match padding queries, which see nothing.
// GQA: query head h reads KV head h / group (group = Hq / Hkv consecutive query heads).
struct AttnParams {
  queries: u32, keys: u32, qHeads: u32, kvHeads: u32,
  group: u32, queryOffset: u32, useSegments: u32, tilesX: u32,
  // softmax scale · log2(e): the kernels work in base 2 (exp2) and save LSE in natural log units
  scaleLog2: f32, scale: f32, tiles: u32, splits: u32,
  // Forward only: keys per split (a multiple of the key block) when splits > 1 (decode).
  keySplit: u32, _pad0: u32, _pad1: u32, _pad2: u32,
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
