// Workgroup reductions through subgroup operations (the adapter's `subgroups` feature): the same
// functions as include/reduce.wgsl, with 2 barriers instead of 2 + log2(WG). Each subgroup reduces
// its lanes in registers; for a sum the lowest invocation of each subgroup leaves the partial in the
// scratch slot of its own index (the others leave 0); then every subgroup sums the WG slots, lane-strided,
// and reduces again, so all invocations get the total without a broadcast barrier. The subgroup
// size and a lane's rank come from subgroupAdd(1) / subgroupExclusiveAdd(1), which holds for any
// mapping of invocations to subgroups (WGSL fixes none). The including shader declares
// `const WG: u32` (a power of two) and calls these from uniform control flow.
enable subgroups;

var<workgroup> reduceScratch: array<f32, WG>;

fn subgroupPartialsSum(lid: u32, v: f32) -> f32 {
  let isLeader = subgroupMin(lid) == lid;
  reduceScratch[lid] = select(0.0, v, isLeader);
  workgroupBarrier();
  let lanes = subgroupAdd(1u);
  var acc = 0.0;
  for (var i = subgroupExclusiveAdd(1u); i < WG; i += lanes) { acc += reduceScratch[i]; }
  let total = subgroupAdd(acc);
  workgroupBarrier();
  return total;
}

fn workgroupSum(v: f32, lid: u32) -> f32 {
  return subgroupPartialsSum(lid, subgroupAdd(v));
}

fn workgroupMax(v: f32, lid: u32) -> f32 {
  // Every lane leaves its subgroup's max (a max needs no single writer), so −inf rows stay −inf.
  reduceScratch[lid] = subgroupMax(v);
  workgroupBarrier();
  let lanes = subgroupAdd(1u);
  var m = reduceScratch[subgroupExclusiveAdd(1u)];
  for (var i = subgroupExclusiveAdd(1u) + lanes; i < WG; i += lanes) { m = max(m, reduceScratch[i]); }
  let total = subgroupMax(m);
  workgroupBarrier();
  return total;
}
