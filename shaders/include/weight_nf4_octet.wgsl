// Eight consecutive weights at once from the NF4 decoder (weight_nf4): octet c is elements
// 8c..8c+7, exactly packed word c (eight nibbles), and lies inside one block (blocksizes are
// powers of two ≥ 32), so the block scale is decoded once per word instead of once per element.
#include "weight_nf4"

fn nf4OctetCode(word: u32, shift: u32) -> f32 {
  return nf4Code(word >> shift);
}

fn weightOctet(c: u32) -> array<vec4<f32>, 2> {
  let word = weightWords[c];
  let scale = blockAbsmax((c * 8u) / NF4_BLOCK);
  var w: array<vec4<f32>, 2>;
  // Byte j holds element 2j in its high nibble: element i of the word sits at bits ((i ^ 1)·4).
  for (var h = 0u; h < 2u; h++) {
    let s = 16u * h;
    w[h] = scale * vec4<f32>(
      nf4OctetCode(word, s + 4u), nf4OctetCode(word, s), nf4OctetCode(word, s + 12u), nf4OctetCode(word, s + 8u));
  }
  return w;
}
