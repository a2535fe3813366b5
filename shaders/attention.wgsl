// Flash-style attention forward (FlashAttention-2 loop order: one pass over key blocks with an
// online softmax, flash-attention `flash_attn/flash_attn_triton.py`). Never materialises the
// N×Nk score matrix: scores of one key block live in registers, K/V blocks in workgroup memory.
//
// One thread per (query, head-of-group) row; a workgroup holds WG consecutive rows of one KV
// head, flattened as row = query·group + g, so the query heads sharing a KV head share every
// K/V tile it loads (and a single decode query still fills `group` threads).
// Grid: x (+ z fold) = row tiles, y = KV head. Outputs: O [N, Hq, D], LSE [Hq, N] (natural log).
#include "attention_common"

const D4: u32 = {{D4}};   // head_dim / 4
const BC: u32 = {{BC}};   // keys per block held in workgroup memory
const WG: u32 = {{WG}};   // rows per workgroup

@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> seg: array<i32>;
@group(0) @binding(5) var<storage, read_write> o: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;

var<workgroup> kTile: array<vec4<f32>, BC * D4>;
var<workgroup> vTile: array<vec4<f32>, BC * D4>;
var<workgroup> segTile: array<i32, BC>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tile = tileOf(wg);
  if (tile >= P.tiles) { return; } // uniform per workgroup
  let kvHead = wg.y;
  let rowsTotal = P.queries * P.group;
  let firstRow = tile * WG;
  let row = firstRow + lid;
  let inRange = row < rowsTotal;
  let rowC = min(row, rowsTotal - 1u);
  let i = rowC / P.group;
  let h = kvHead * P.group + rowC % P.group;
  let pos = P.queryOffset + i;
  var segQ = 0;
  if (P.useSegments != 0u) { segQ = seg[pos]; }
  let live = inRange && segQ >= 0;
  // Keys past the last query of the tile are masked for every row: stop there (causal).
  let lastQuery = (min(firstRow + WG, rowsTotal) - 1u) / P.group;
  let keyEnd = min(P.keys, P.queryOffset + lastQuery + 1u);

  var qr: array<vec4<f32>, D4>;
  var acc: array<vec4<f32>, D4>;
  let qBase = (i * P.qHeads + h) * D4;
  for (var t = 0u; t < D4; t++) {
    qr[t] = q[qBase + t] * P.scaleLog2;
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
    // No `continue` here: skipping must not make the barriers above non-uniform.
    if (live && kb <= pos) {
      var mNew = m;
      for (var c = 0u; c < BC; c++) {
        let key = kb + c;
        var sc = MASKED;
        if (key <= pos && key < keyEnd && segTile[c] == segQ) {
          var d = 0.0;
          for (var t = 0u; t < D4; t++) { d += dot(qr[t], kTile[c * D4 + t]); }
          sc = d;
        }
        s[c] = sc;
        mNew = max(mNew, sc);
      }
      if (mNew >= MASK_TEST) { // something visible in this block
        let alpha = exp2(m - mNew);
        l *= alpha;
        for (var t = 0u; t < D4; t++) { acc[t] *= alpha; }
        for (var c = 0u; c < BC; c++) {
          if (s[c] >= MASK_TEST) {
            let p = exp2(s[c] - mNew);
            l += p;
            for (var t = 0u; t < D4; t++) { acc[t] = fma(vec4<f32>(p), vTile[c * D4 + t], acc[t]); }
          }
        }
        m = mNew;
      }
    }
  }

  if (!inRange) { return; }
  let seen = live && l > 0.0;
  let inv = select(0.0, 1.0 / l, seen);
  for (var t = 0u; t < D4; t++) { o[qBase + t] = acc[t] * inv; }
  lse[h * P.queries + i] = select(0.0, (m + log2(l)) * LN2, seen);
}
