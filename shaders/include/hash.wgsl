// Counter-based random bits: a pure function of (seed, step, stream, index), so a backward pass
// regenerates a forward dropout mask instead of storing it. The mixer is "lowbias32" (Chris
// Wellons' integer hash search, bijective on u32); src/engine/ops/lora.ts has the host twin.
fn mix32(v: u32) -> u32 {
  var x = v;
  x ^= x >> 16u;
  x *= 0x7feb352du;
  x ^= x >> 15u;
  x *= 0x846ca68bu;
  x ^= x >> 16u;
  return x;
}

fn hash4(seed: u32, step: u32, stream: u32, index: u32) -> u32 {
  return mix32(index ^ mix32(stream ^ mix32(step ^ mix32(seed + 0x9e3779b9u))));
}
