// NF4 block scales stored as plain f32 (no double quantization). Binding 4 of the includer.
@group(0) @binding(4) var<storage, read> absmaxF32: array<f32>;

fn blockAbsmax(block: u32) -> f32 {
  return absmaxF32[block];
}
