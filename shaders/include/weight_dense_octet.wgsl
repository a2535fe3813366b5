// Eight consecutive weights at once from the dense decoder (weight_dense): octet c is elements
// 8c..8c+7 of the flattened weight, i.e. words 8c.. (f32) or 4c.. (bf16/f16 pairs), so a thread
// reads whole words and unpacks each once instead of re-reading a word per element.
#include "weight_dense"
#include "octet"

fn weightOctet(c: u32) -> Octet {
  if (W_KIND == 0u) {
    let b = c * 8u;
    return Octet(
      bitcast<vec4<f32>>(vec4<u32>(weightWords[b], weightWords[b + 1u], weightWords[b + 2u], weightWords[b + 3u])),
      bitcast<vec4<f32>>(vec4<u32>(weightWords[b + 4u], weightWords[b + 5u], weightWords[b + 6u], weightWords[b + 7u])));
  }
  let b = c * 4u;
  return Octet(wordQuad(weightWords[b], weightWords[b + 1u]), wordQuad(weightWords[b + 2u], weightWords[b + 3u]));
}

// Four 16-bit weights from two words (low half first).
fn wordQuad(lo: u32, hi: u32) -> vec4<f32> {
  return vec4<f32>(
    decodeWeight(W_KIND, 0u, lo), decodeWeight(W_KIND, 1u, lo), decodeWeight(W_KIND, 0u, hi), decodeWeight(W_KIND, 1u, hi));
}
