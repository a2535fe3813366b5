// Flash-style attention forward (FlashAttention-2 loop order: one pass over key blocks with an
// online softmax, flash-attention `flash_attn/flash_attn_triton.py`). Never materialises the
// N×Nk score matrix: scores of one key block live in registers, K/V blocks in workgroup memory.
//
// A workgroup holds ROWS consecutive (query, head-of-group) rows of one KV head, flattened as
// row = query·group + g, so the query heads sharing a KV head share every K/V tile it loads (and
// a single decode query still fills `group` rows). Each row is served by L lanes that own the
// interleaved vec4 columns lane, lane+L, … of Q and of the output accumulator, which keeps the
// per-thread registers at 2·D/L floats for large head dims; with L > 1 the lanes' partial dot
// products meet in workgroup memory.
// Grid: x (+ z fold) = row tiles, y = KV head · splits. Outputs: O [N, Hq, D], LSE [Hq, N]
// (natural log). Decode (all rows in one tile, many keys) splits the keys over `splits`
// workgroups per KV head (flash-decoding): split s writes its own normalised O_s and LSE_s at
// offset s, and the `combine` entry point merges them: O = Σ_s O_s·exp(LSE_s − LSE).
#include "attention_common"

const D4: u32 = {{D4}};     // head_dim / 4
const L: u32 = {{L}};       // lanes per row
const ROWS: u32 = {{ROWS}}; // rows per workgroup
const BC: u32 = {{BC}};     // keys per block held in workgroup memory
const PART: u32 = {{PART}}; // ROWS·BC·L partial scores when L > 1, else 1 (unused)
const DL4: u32 = D4 / L;    // vec4 columns per lane
const WG: u32 = ROWS * L;

@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> seg: array<i32>;
@group(0) @binding(5) var<storage, read_write> o: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;

var<workgroup> kTile: array<vec4<f32>, BC * D4>;
var<workgroup> vTile: array<vec4<f32>, BC * D4>;
var<workgroup> segTile: array<i32, BC>;
var<workgroup> partS: array<f32, PART>;
#include "attention_kv_tile"

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tile = tileOf(wg);
  if (tile >= P.tiles) { return; } // uniform per workgroup
  let kvHead = wg.y / P.splits;
  let split = wg.y % P.splits;
  let qrow = queryRow(tile, kvHead, lid);
  var keyEnd = tileKeyEnd(tile);
  var keyBegin = tileKeyBegin(tile);
  if (P.splits > 1u) { // splits cover [tileKeyBegin, tileKeyEnd) of the single tile
    keyBegin += split * P.keySplit;
    keyEnd = min(keyEnd, keyBegin + P.keySplit);
  }

  var qr: array<vec4<f32>, DL4>;
  var acc: array<vec4<f32>, DL4>;
  let qBase = (qrow.i * P.qHeads + qrow.h) * D4 + qrow.lane;
  for (var t = 0u; t < DL4; t++) {
    qr[t] = q[qBase + t * L] * P.scaleLog2;
    acc[t] = vec4<f32>(0.0);
  }
  var m = MASKED;
  var l = 0.0;
  var s: array<f32, BC>;

  for (var kb = keyBegin; kb < keyEnd; kb += BC) {
    workgroupBarrier();
    loadKvTile(kb, keyEnd, kvHead, lid, WG);
    workgroupBarrier();
    // No `continue` in this loop: skipping must not make the barriers non-uniform.
    // Rows whose window ends before this block (a tile spans up to ROWS queries) skip it too.
    let work = qrow.live && kb <= qrow.pos && (P.window == 0u || kb + BC + P.window > qrow.pos + 1u);
    if (work) {
      for (var c = 0u; c < BC; c++) {
        var d = 0.0;
        if (keyInWindow(kb + c, qrow.pos) && kb + c < keyEnd && segTile[c] == qrow.segment) {
          for (var t = 0u; t < DL4; t++) { d += dot(qr[t], kTile[c * D4 + t * L + qrow.lane]); }
        }
        s[c] = d;
      }
    }
    if (L > 1u) {
      for (var c = 0u; c < BC; c++) { partS[(qrow.inTile * BC + c) * L + qrow.lane] = s[c]; }
      workgroupBarrier();
      for (var c = 0u; c < BC; c++) {
        var d = 0.0;
        for (var j = 0u; j < L; j++) { d += partS[(qrow.inTile * BC + c) * L + j]; }
        s[c] = d;
      }
    }
    if (work) {
      var mNew = m;
      for (var c = 0u; c < BC; c++) {
        if (keyInWindow(kb + c, qrow.pos) && kb + c < keyEnd && segTile[c] == qrow.segment) {
          s[c] = capScore(s[c]);
        } else {
          s[c] = MASKED;
        }
        mNew = max(mNew, s[c]);
      }
      if (mNew >= MASK_TEST) { // something visible in this block
        let alpha = exp2(m - mNew);
        l *= alpha;
        for (var t = 0u; t < DL4; t++) { acc[t] *= alpha; }
        for (var c = 0u; c < BC; c++) {
          if (s[c] >= MASK_TEST) {
            let p = exp2(s[c] - mNew);
            l += p;
            for (var t = 0u; t < DL4; t++) { acc[t] = fma(vec4<f32>(p), vTile[c * D4 + t * L + qrow.lane], acc[t]); }
          }
        }
        m = mNew;
      }
    }
  }

  if (!qrow.inRange) { return; }
  let seen = qrow.live && l > 0.0;
  let inv = select(0.0, 1.0 / l, seen);
  let oAt = split * P.queries * P.qHeads * D4 + qBase;
  for (var t = 0u; t < DL4; t++) { o[oAt + t * L] = acc[t] * inv; }
  // A split that saw nothing gets weight exp(MASKED) = 0 in the combine; unsplit rows keep LSE 0.
  let unseen = select(0.0, MASKED, P.splits > 1u);
  if (qrow.lane == 0u) { lse[split * P.qHeads * P.queries + qrow.h * P.queries + qrow.i] = select(unseen, (m + log2(l)) * LN2, seen); }
}

// ---- combine (after a split forward) ------------------------------------------------------
@group(0) @binding(1) var<storage, read> partO: array<vec4<f32>>;   // [splits, N, Hq, D]
@group(0) @binding(2) var<storage, read> partLse: array<f32>;      // [splits, Hq, N]
@group(0) @binding(3) var<storage, read_write> outO: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> outLse: array<f32>;

@compute @workgroup_size(64)
fn combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let idx = tileOf(wg) * 64u + lid; // (query, head)
  if (idx >= P.queries * P.qHeads) { return; }
  let i = idx / P.qHeads;
  let h = idx % P.qHeads;
  let rows = P.queries * P.qHeads;
  var mx = MASKED;
  for (var s = 0u; s < P.splits; s++) { mx = max(mx, partLse[s * rows + h * P.queries + i]); }
  if (mx < MASK_TEST) { // padding (or nothing visible): O = 0, LSE = 0 as unsplit
    for (var t = 0u; t < D4; t++) { outO[idx * D4 + t] = vec4<f32>(0.0); }
    outLse[h * P.queries + i] = 0.0;
    return;
  }
  var total = 0.0;
  for (var s = 0u; s < P.splits; s++) { total += exp(partLse[s * rows + h * P.queries + i] - mx); }
  for (var t = 0u; t < D4; t++) {
    var acc = vec4<f32>(0.0);
    for (var s = 0u; s < P.splits; s++) {
      let w = exp(partLse[s * rows + h * P.queries + i] - mx) / total;
      acc = fma(vec4<f32>(w), partO[(s * rows + idx) * D4 + t], acc);
    }
    outO[idx * D4 + t] = acc;
  }
  outLse[h * P.queries + i] = mx + log(total);
}
