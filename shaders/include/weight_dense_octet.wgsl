// Eight consecutive weights at once from the dense decoder (weight_dense): octet c is elements
// 8c..8c+7 of the flattened weight, i.e. words 8c.. (f32) or 4c.. (bf16/f16 pairs), so a thread
// reads whole words and unpacks each once instead of re-reading a word per element.
#include "weight_dense"

fn weightOctet(c: u32) -> array<vec4<f32>, 2> {
  var w: array<vec4<f32>, 2>;
  if (W_KIND == 0u) {
    let b = c * 8u;
    w[0] = bitcast<vec4<f32>>(vec4<u32>(weightWords[b], weightWords[b + 1u], weightWords[b + 2u], weightWords[b + 3u]));
    w[1] = bitcast<vec4<f32>>(vec4<u32>(weightWords[b + 4u], weightWords[b + 5u], weightWords[b + 6u], weightWords[b + 7u]));
    return w;
  }
  let b = c * 4u;
  for (var h = 0u; h < 2u; h++) {
    let lo = weightWords[b + 2u * h];
    let hi = weightWords[b + 2u * h + 1u];
    w[h] = vec4<f32>(
      decodeWeight(W_KIND, 0u, lo), decodeWeight(W_KIND, 1u, lo), decodeWeight(W_KIND, 0u, hi), decodeWeight(W_KIND, 1u, hi));
  }
  return w;
}
