// Eight consecutive weights at once from the NF4 decoder (weight_nf4): octet c is elements
// 8c..8c+7, exactly packed word c (eight nibbles), and lies inside one block (blocksizes are
// powers of two ≥ 32), so the block scale is decoded once per word instead of once per element.
#include "weight_nf4"
#include "octet"

fn nf4OctetCode(word: u32, shift: u32) -> f32 {
  return nf4Code(word >> shift);
}

fn weightOctet(c: u32) -> Octet {
  let word = weightWords[c];
  let scale = blockAbsmax((c * 8u) / NF4_BLOCK);
  // Byte j holds element 2j in its high nibble: element i of the word sits at bits ((i ^ 1)·4).
  return Octet(scale * nibbleQuad(word, 0u), scale * nibbleQuad(word, 16u));
}

fn nibbleQuad(word: u32, s: u32) -> vec4<f32> {
  return vec4<f32>(
    nf4OctetCode(word, s + 4u), nf4OctetCode(word, s), nf4OctetCode(word, s + 12u), nf4OctetCode(word, s + 8u));
}
