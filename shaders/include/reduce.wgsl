// Tree reductions across one workgroup. The including shader declares `const WG: u32`
// (its workgroup size, a power of two). Call from uniform control flow: they barrier.
var<workgroup> reduceScratch: array<f32, WG>;

fn workgroupSum(v: f32, lid: u32) -> f32 {
  reduceScratch[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { reduceScratch[lid] += reduceScratch[lid + s]; }
    workgroupBarrier();
  }
  let total = reduceScratch[0];
  workgroupBarrier();
  return total;
}

fn workgroupMax(v: f32, lid: u32) -> f32 {
  reduceScratch[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { reduceScratch[lid] = max(reduceScratch[lid], reduceScratch[lid + s]); }
    workgroupBarrier();
  }
  let m = reduceScratch[0];
  workgroupBarrier();
  return m;
}
