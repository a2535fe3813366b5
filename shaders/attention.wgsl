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
// Grid: x (+ z fold) = row tiles, y = KV head. Outputs: O [N, Hq, D], LSE [Hq, N] (natural log).
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

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tile = tileOf(wg);
  if (tile >= P.tiles) { return; } // uniform per workgroup
  let kvHead = wg.y;
  let rowLocal = lid / L;
  let lane = lid % L;
  let rowsTotal = P.queries * P.group;
  let firstRow = tile * ROWS;
  let row = firstRow + rowLocal;
  let inRange = row < rowsTotal;
  let rowC = min(row, rowsTotal - 1u);
  let i = rowC / P.group;
  let h = kvHead * P.group + rowC % P.group;
  let pos = P.queryOffset + i;
  var segQ = 0;
  if (P.useSegments != 0u) { segQ = seg[pos]; }
  let live = inRange && segQ >= 0;
  // Keys past the last query of the tile are masked for every row: stop there (causal).
  let lastQuery = (min(firstRow + ROWS, rowsTotal) - 1u) / P.group;
  let keyEnd = min(P.keys, P.queryOffset + lastQuery + 1u);

  var qr: array<vec4<f32>, DL4>;
  var acc: array<vec4<f32>, DL4>;
  let qBase = (i * P.qHeads + h) * D4 + lane;
  for (var t = 0u; t < DL4; t++) {
    qr[t] = q[qBase + t * L] * P.scaleLog2;
    acc[t] = vec4<f32>(0.0);
  }
  var m = MASKED;
  var l = 0.0;
  var s: array<f32, BC>;

  for (var kb = 0u; kb < keyEnd; kb += BC) {
    workgroupBarrier();
    for (var e = lid; e < BC * D4; e += WG) {
      let key = kb + e / D4;
      var kv = vec4<f32>(0.0);
      var vv = vec4<f32>(0.0);
      if (key < keyEnd) {
        let at = (key * P.kvHeads + kvHead) * D4 + e % D4;
        kv = k[at];
        vv = v[at];
      }
      kTile[e] = kv;
      vTile[e] = vv;
    }
    for (var c = lid; c < BC; c += WG) {
      var sk = 0;
      if (P.useSegments != 0u && kb + c < keyEnd) { sk = seg[kb + c]; }
      segTile[c] = sk;
    }
    workgroupBarrier();
    // No `continue` in this loop: skipping must not make the barriers non-uniform.
    let work = live && kb <= pos;
    if (work) {
      for (var c = 0u; c < BC; c++) {
        var d = 0.0;
        if (kb + c <= pos && segTile[c] == segQ) { // pos < keyEnd, so the key is loaded
          for (var t = 0u; t < DL4; t++) { d += dot(qr[t], kTile[c * D4 + t * L + lane]); }
        }
        s[c] = d;
      }
    }
    if (L > 1u) {
      for (var c = 0u; c < BC; c++) { partS[(rowLocal * BC + c) * L + lane] = s[c]; }
      workgroupBarrier();
      for (var c = 0u; c < BC; c++) {
        var d = 0.0;
        for (var j = 0u; j < L; j++) { d += partS[(rowLocal * BC + c) * L + j]; }
        s[c] = d;
      }
    }
    if (work) {
      var mNew = m;
      for (var c = 0u; c < BC; c++) {
        if (!(kb + c <= pos && segTile[c] == segQ)) { s[c] = MASKED; }
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
            for (var t = 0u; t < DL4; t++) { acc[t] = fma(vec4<f32>(p), vTile[c * D4 + t * L + lane], acc[t]); }
          }
        }
        m = mNew;
      }
    }
  }

  if (!inRange) { return; }
  let seen = live && l > 0.0;
  let inv = select(0.0, 1.0 / l, seen);
  for (var t = 0u; t < DL4; t++) { o[qBase + t * L] = acc[t] * inv; }
  if (lane == 0u) { lse[h * P.queries + i] = select(0.0, (m + log2(l)) * LN2, seen); }
}
