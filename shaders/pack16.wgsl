// f32 ⇄ bf16 storage of saved activations (checkpointed layer inputs): math stays f32, only the
// copy kept for the backward is 16-bit, two values per u32 word (element 2j in the low half,
// 2j+1 in the high half, the layout of include/packed16 and of a safetensors BF16 tensor).
// Rounding is to nearest even with NaN kept quiet, exactly torch's float → bfloat16 cast
// (c10/util/BFloat16.h round_to_nearest_even), so an activation stored here equals the value a
// bf16 PyTorch run keeps. bf16 rather than f16: the same exponent range as f32, so residual-stream
// outliers (hundreds to thousands in Qwen2.5) never overflow. Both directions move bit patterns
// only (f32 operands are bound as u32), so no float unit can flush subnormals on the way.
const WG: u32 = 256u;

struct Params {
  n: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

fn linearIndex(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * WG + lid;
}

fn bf16Bits(bits: u32) -> u32 {
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0u) {
    return (bits >> 16u) | 0x40u;
  }
  return (bits + 0x7fffu + ((bits >> 16u) & 1u)) >> 16u;
}

// ---- pack: f32 [n] → bf16 pairs [ceil(n/2)] (one thread per word) ----------------------------
@group(0) @binding(1) var<storage, read> srcF32: array<u32>;
@group(0) @binding(2) var<storage, read_write> dstWords: array<u32>;

@compute @workgroup_size(WG)
fn pack(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let w = linearIndex(wg, nwg, lid);
  let i = 2u * w;
  if (i >= p.n) { return; }
  let lo = bf16Bits(srcF32[i]);
  var hi = 0u;
  if (i + 1u < p.n) { hi = bf16Bits(srcF32[i + 1u]); }
  dstWords[w] = lo | (hi << 16u);
}

// ---- unpack: bf16 pairs → f32 [n] (one thread per element) -----------------------------------
@group(0) @binding(1) var<storage, read> srcWords: array<u32>;
@group(0) @binding(2) var<storage, read_write> dstF32: array<u32>;

@compute @workgroup_size(WG)
fn unpack(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let i = linearIndex(wg, nwg, lid);
  if (i >= p.n) { return; }
  let word = srcWords[i >> 1u];
  dstF32[i] = select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u);
}
