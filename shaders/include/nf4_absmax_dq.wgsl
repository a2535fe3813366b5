// Double-quantized NF4 block scales (bitsandbytes compress_statistics): absmax = code8[q]·nested +
// offset, decoded per element so the weights keep 8 bits per block scale instead of 32.
// Binding 4: u8 codes, four per u32 (code of block b in byte b%4 of word b/4).
// Binding 5: f32 table [code8[0..255], offset, nestedAbsmax[0..]] (see src/engine/ops/nf4.ts).
const NESTED_BLOCK: u32 = {{NESTED_BLOCK}};

@group(0) @binding(4) var<storage, read> absmaxCodes: array<u32>;
@group(0) @binding(5) var<storage, read> absmaxTable: array<f32>;

fn blockAbsmax(block: u32) -> f32 {
  let q = (absmaxCodes[block >> 2u] >> ((block & 3u) * 8u)) & 0xffu;
  // Two roundings like bitsandbytes' dequantize_blockwise followed by `absmax += offset`.
  let scaled = absmaxTable[q] * absmaxTable[257u + block / NESTED_BLOCK];
  return scaled + absmaxTable[256u];
}
