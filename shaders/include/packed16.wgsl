// 16-bit floats stored two per u32: element 2j in the low half, 2j+1 in the high half
// (the little-endian layout of a safetensors F16/BF16 tensor, uploaded byte for byte).
fn bf16ToF32(bits: u32) -> f32 {
  return bitcast<f32>(bits << 16u);
}

fn unpackBf16(word: u32, high: bool) -> f32 {
  return select(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u), high);
}

fn unpackF16(word: u32, high: bool) -> f32 {
  let pair = unpack2x16float(word);
  return select(pair.x, pair.y, high);
}

// Element `index` of a weight array bound as array<u32>, by storage kind:
// 0 = f32 (bit pattern per word), 1 = bf16 pairs, 2 = f16 pairs.
fn decodeWeight(kind: u32, index: u32, word: u32) -> f32 {
  if (kind == 0u) { return bitcast<f32>(word); }
  let high = (index & 1u) == 1u;
  if (kind == 1u) { return unpackBf16(word, high); }
  return unpackF16(word, high);
}

fn wordIndex(kind: u32, index: u32) -> u32 {
  return select(index >> 1u, index, kind == 0u);
}
