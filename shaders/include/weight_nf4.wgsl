// Weight decoder for NF4 (bitsandbytes layout): packed codes at binding 2, block scales through
// the absmax include the constants select (nf4_absmax_f32: binding 4; nf4_absmax_dq: bindings 4-5).
// Byte j of the packed stream holds element 2j in its HIGH nibble and 2j+1 in the low nibble;
// bytes are little-endian inside each u32 word. Dequant = code[q]·absmax[i / NF4_BLOCK] (f32).
#include "nf4_codes"
#include "{{NF4_ABSMAX}}"

const NF4_BLOCK: u32 = {{NF4_BLOCK}};

@group(0) @binding(2) var<storage, read> weightWords: array<u32>;

fn nf4Nibble(i: u32) -> u32 {
  // Element i sits in byte i/2 (bits 8·((i/2)%4)), high nibble when i is even.
  return (weightWords[i >> 3u] >> (((i & 7u) ^ 1u) * 4u)) & 15u;
}

fn weightAt(i: u32) -> f32 {
  return nf4Code(nf4Nibble(i)) * blockAbsmax(i / NF4_BLOCK);
}
