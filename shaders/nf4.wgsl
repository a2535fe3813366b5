// NF4 quantization of f32/bf16/f16 weights and its inverse, bit-exact with bitsandbytes
// (bitsandbytes/functional.py quantize_4bit / dequantize_4bit, csrc/kernels.cu kQuantizeBlockwise).
// Entry points, in the order src/engine/ops/nf4.ts records them:
//   absmax      one thread per block: absmax[b] = max |w| over the block (last block may be partial)
//   quantize    one thread per packed u32 word (8 codes): q = nf4Quantize(w · (1/absmax))
//   dq_offset   one workgroup: offset = mean(absmax) for double quantization
//   dq_nested   one thread per nested block (p.nestedBlock, 256 in bitsandbytes): nested absmax = max |absmax − offset|
//   dq_quantize one thread per word of 4 u8 codes: signed dynamic 8-bit code of (absmax − offset)
//   dequantize  one thread per packed word: w = code[q]·absmax (also writes the decoded absmax)
// Binding numbers are reused between entry points; each pipeline binds only what it uses.
#include "packed16"
#include "weight_nf4"

const SRC_KIND: u32 = {{SRC_KIND}};
const WG: u32 = 256u;

struct Params {
  numel: u32, nBlocks: u32, nNested: u32, _pad0: u32,
  // f32(1/nBlocks) from the host: offset = sum · this (a correctly rounded product; WGSL's `/`
  // may be 2.5 ulp off, which would make the stored offset GPU-dependent).
  recipBlocks: f32, nestedBlock: u32, _pad2: u32, _pad3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> absmaxOut: array<f32>;
@group(0) @binding(3) var<storage, read_write> packedOut: array<u32>;

@group(0) @binding(1) var<storage, read> absmaxIn: array<f32>;
@group(0) @binding(2) var<storage, read_write> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> codesOut: array<u32>;

@group(0) @binding(1) var<storage, read_write> dequantOut: array<f32>;
@group(0) @binding(3) var<storage, read_write> dequantAbsmax: array<f32>;

var<workgroup> partial: array<f32, WG>;

fn threadIndex(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, size: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * size + lid;
}

fn srcAt(i: u32) -> f32 {
  return decodeWeight(SRC_KIND, i, src[wordIndex(SRC_KIND, i)]);
}

@compute @workgroup_size(64)
fn absmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = threadIndex(wg, nwg, lid, 64u);
  if (b >= p.nBlocks) { return; }
  let start = b * NF4_BLOCK;
  let end = min(start + NF4_BLOCK, p.numel);
  var m = 0.0;
  for (var i = start; i < end; i++) { m = max(m, abs(srcAt(i))); }
  absmaxOut[b] = m;
}

@compute @workgroup_size(64)
fn quantize(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w = threadIndex(wg, nwg, lid, 64u);
  let first = w * 8u;
  if (first >= p.numel) { return; }
  // NF4_BLOCK is a multiple of 8, so one word never straddles two blocks.
  let a = absmaxOut[first / NF4_BLOCK];
  let r = exactReciprocal(a);
  var word = 0u;
  for (var j = 0u; j < 8u; j++) {
    let i = first + j;
    // Past the end bitsandbytes quantizes a 0 (its loads pad with zeros): code 7, or 0 when absmax is 0.
    let x = select(0.0, srcAt(i), i < p.numel);
    // An all-zero block has absmax 0: CUDA computes 0·(1/0) = NaN and the tree yields code 0.
    let q = select(nf4Quantize(x * r), 0u, a == 0.0);
    word |= q << ((j ^ 1u) * 4u);
  }
  packedOut[w] = word;
}

@compute @workgroup_size(256)
fn dq_offset(@builtin(local_invocation_index) lid: u32) {
  // Fixed summation order (strided per thread, then a tree) so the offset is the same on every GPU;
  // tests/reference/gen_nf4.py follows the same order.
  var s = 0.0;
  for (var i = lid; i < p.nBlocks; i += WG) { s += absmaxIn[i]; }
  partial[lid] = s;
  workgroupBarrier();
  for (var h = WG / 2u; h > 0u; h >>= 1u) {
    if (lid < h) { partial[lid] += partial[lid + h]; }
    workgroupBarrier();
  }
  if (lid == 0u) { table[256] = partial[0] * p.recipBlocks; }
}

@compute @workgroup_size(64)
fn dq_nested(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = threadIndex(wg, nwg, lid, 64u);
  if (b >= p.nNested) { return; }
  let offset = table[256];
  let end = min((b + 1u) * p.nestedBlock, p.nBlocks);
  var m = 0.0;
  for (var i = b * p.nestedBlock; i < end; i++) { m = max(m, abs(absmaxIn[i] - offset)); }
  table[257u + b] = m;
}

// bitsandbytes' dQuantize<0> (csrc/kernels.cu): a 7-step binary search over the sorted 256-entry
// code, then the nearer of the bracketing codes by f32 midpoints. Ties go to the search pivot.
fn quantize8(x: f32) -> u32 {
  var pivot = 127u;
  var upperPivot = 255u;
  var lowerPivot = 0u;
  var lower = -1.0;
  var upper = 1.0;
  var v = table[pivot];
  for (var step = 64u; step > 0u; step >>= 1u) {
    if (x > v) {
      lowerPivot = pivot; lower = v; pivot += step;
    } else {
      upperPivot = pivot; upper = v; pivot -= step;
    }
    v = table[pivot];
  }
  if (upperPivot == 255u) { upper = table[255]; }
  if (lowerPivot == 0u) { lower = table[0]; }
  if (x > v) {
    return select(pivot, upperPivot, x > (upper + v) * 0.5);
  }
  return select(pivot, lowerPivot, x < (lower + v) * 0.5);
}

@compute @workgroup_size(64)
fn dq_quantize(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w = threadIndex(wg, nwg, lid, 64u);
  if (w * 4u >= p.nBlocks) { return; }
  let offset = table[256];
  var word = 0u;
  for (var j = 0u; j < 4u; j++) {
    let b = w * 4u + j;
    if (b >= p.nBlocks) { break; }
    let nested = table[257u + b / p.nestedBlock];
    // As in quantize: a zero nested absmax gives NaN on CUDA and code 0.
    let q = select(quantize8((absmaxIn[b] - offset) * exactReciprocal(nested)), 0u, nested == 0.0);
    word |= q << (j * 8u);
  }
  codesOut[w] = word;
}

@compute @workgroup_size(64)
fn dequantize(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w = threadIndex(wg, nwg, lid, 64u);
  let first = w * 8u;
  if (first >= p.numel) { return; }
  let block = first / NF4_BLOCK;
  let a = blockAbsmax(block);
  if (first % NF4_BLOCK == 0u) { dequantAbsmax[block] = a; }
  let word = weightWords[w];
  for (var j = 0u; j < 8u; j++) {
    let i = first + j;
    if (i >= p.numel) { break; }
    dequantOut[i] = nf4Code((word >> ((j ^ 1u) * 4u)) & 15u) * a;
  }
}
