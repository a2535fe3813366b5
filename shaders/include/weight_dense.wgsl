// Weight decoder for f32 / bf16 / f16 weights bound as array<u32> at binding 2 (kinds from
// packed16: 0 = f32, 1 = bf16, 2 = f16). Included by kernels as `#include "{{..._DECODE}}"`;
// every decoder exposes `weightAt(i)`: element i of the flattened row-major weight, in f32.
#include "packed16"

const W_KIND: u32 = {{W_KIND}};

@group(0) @binding(2) var<storage, read> weightWords: array<u32>;

fn weightAt(i: u32) -> f32 {
  return decodeWeight(W_KIND, i, weightWords[wordIndex(W_KIND, i)]);
}
