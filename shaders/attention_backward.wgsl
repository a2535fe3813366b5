// FlashAttention-2 backward (flash-attention `flash_attn/flash_attn_triton.py`, REFERENCE.md):
// P is recomputed from the saved LSE, so nothing of size N×Nk is ever stored. WGSL has no float
// atomics, so dQ and dK/dV are separate passes that each own their outputs.
// Entry points (layouts and masking rule in attention_common.wgsl):
//   rowDot       dO, O → rowDot [Hq, N] = Σ_d dO·O                  one thread per (query, head)
//   dq           Q, K, V, seg, dO, LSE, rowDot → dQ [N, Hq, D]      one thread per (query, head-of-group)
//                row, K/V blocks in workgroup memory (same tiling as the forward)
//   dkdv         Q, K, V, seg, dO, LSE, rowDot → dK/dV of one query head [Nk, Hq, D]: one thread
//                per key, Q/dO blocks in workgroup memory, walking query blocks from the diagonal.
//                With group == 1 this is dK/dV itself; otherwise per-head partials …
//   reduceHeads  … summed over the `group` query heads of each KV head → dK, dV [Nk, Hkv, D].
#include "attention_common"

const D4: u32 = {{D4}};   // head_dim / 4
const BC: u32 = {{BC}};   // dq: keys per block in workgroup memory
const WG: u32 = {{WG}};   // dq, rowDot, reduceHeads: threads per workgroup
const BK: u32 = {{BK}};   // dkdv: keys (threads) per workgroup
const BQ: u32 = {{BQ}};   // dkdv: query rows per block in workgroup memory

// ---- rowDot ---------------------------------------------------------------------------
@group(0) @binding(1) var<storage, read> rdDOut: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> rdOut: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> rdRowDot: array<f32>;

@compute @workgroup_size(WG)
fn rowDot(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let idx = tileOf(wg) * WG + lid;
  if (idx >= P.queries * P.qHeads) { return; }
  let i = idx / P.qHeads;
  let h = idx % P.qHeads;
  var acc = 0.0;
  for (var t = 0u; t < D4; t++) { acc += dot(rdDOut[idx * D4 + t], rdOut[idx * D4 + t]); }
  rdRowDot[h * P.queries + i] = acc;
}

// ---- shared bindings of dq and dkdv ------------------------------------------------------
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> seg: array<i32>;
@group(0) @binding(5) var<storage, read> dOut: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> lse: array<f32>;
@group(0) @binding(7) var<storage, read> rowDotIn: array<f32>;

// ---- dq -------------------------------------------------------------------------------
// dQ_i = scale · Σ_j P_ij (dP_ij − D_i) K_j, with P_ij = exp(scale·q_i·k_j − LSE_i), dP_ij = dO_i·v_j.
@group(0) @binding(8) var<storage, read_write> dqOut: array<vec4<f32>>;

var<workgroup> kTile: array<vec4<f32>, BC * D4>;
var<workgroup> vTile: array<vec4<f32>, BC * D4>;
var<workgroup> segTile: array<i32, BC>;

@compute @workgroup_size(WG)
fn dq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
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
  let lastQuery = (min(firstRow + WG, rowsTotal) - 1u) / P.group;
  let keyEnd = min(P.keys, P.queryOffset + lastQuery + 1u);

  var qr: array<vec4<f32>, D4>;
  var dor: array<vec4<f32>, D4>;
  var acc: array<vec4<f32>, D4>;
  let base = (i * P.qHeads + h) * D4;
  for (var t = 0u; t < D4; t++) {
    qr[t] = q[base + t] * P.scaleLog2;
    dor[t] = dOut[base + t];
    acc[t] = vec4<f32>(0.0);
  }
  let lse2 = lse[h * P.queries + i] * LOG2E;
  let rowD = rowDotIn[h * P.queries + i];

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
    if (live && kb <= pos) {
      for (var c = 0u; c < BC; c++) {
        let key = kb + c;
        if (key <= pos && key < keyEnd && segTile[c] == segQ) {
          var sc = 0.0;
          var dp = 0.0;
          for (var t = 0u; t < D4; t++) {
            sc += dot(qr[t], kTile[c * D4 + t]);
            dp += dot(dor[t], vTile[c * D4 + t]);
          }
          let ds = exp2(sc - lse2) * (dp - rowD);
          for (var t = 0u; t < D4; t++) { acc[t] = fma(vec4<f32>(ds), kTile[c * D4 + t], acc[t]); }
        }
      }
    }
  }
  if (!inRange) { return; }
  let outScale = select(0.0, P.scale, live);
  for (var t = 0u; t < D4; t++) { dqOut[base + t] = acc[t] * outScale; }
}

// ---- dkdv -----------------------------------------------------------------------------
// For key j of query head h: dV_j = Σ_i P_ij dO_i,  dK_j = scale · Σ_i P_ij (dP_ij − D_i) Q_i.
@group(0) @binding(8) var<storage, read_write> dkOut: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> dvOut: array<vec4<f32>>;

var<workgroup> qTile: array<vec4<f32>, BQ * D4>;
var<workgroup> doTile: array<vec4<f32>, BQ * D4>;
var<workgroup> lseTile: array<f32, BQ>;   // log2 units
var<workgroup> rowDTile: array<f32, BQ>;
var<workgroup> segRowTile: array<i32, BQ>; // < 0: padding or past the last query

@compute @workgroup_size(BK)
fn dkdv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tile = tileOf(wg);
  if (tile >= P.tiles) { return; } // uniform per workgroup
  let h = wg.y;
  let kvHead = h / P.group;
  let kb = tile * BK;
  let key = kb + lid;
  let keyInRange = key < P.keys;
  let keyC = min(key, P.keys - 1u);
  var segK = 0;
  if (P.useSegments != 0u) { segK = seg[keyC]; }

  var kr: array<vec4<f32>, D4>;
  var vr: array<vec4<f32>, D4>;
  var dk: array<vec4<f32>, D4>;
  var dv: array<vec4<f32>, D4>;
  let kvBase = (keyC * P.kvHeads + kvHead) * D4;
  for (var t = 0u; t < D4; t++) {
    kr[t] = k[kvBase + t] * P.scaleLog2;
    vr[t] = v[kvBase + t];
    dk[t] = vec4<f32>(0.0);
    dv[t] = vec4<f32>(0.0);
  }
  // Causal: queries before position kb see none of this block's keys.
  var iStart = 0u;
  if (kb > P.queryOffset) { iStart = kb - P.queryOffset; }

  for (var i0 = iStart; i0 < P.queries; i0 += BQ) {
    workgroupBarrier();
    for (var e = lid; e < BQ * D4; e += BK) {
      let i = i0 + e / D4;
      var qv = vec4<f32>(0.0);
      var dov = vec4<f32>(0.0);
      if (i < P.queries) {
        let at = (i * P.qHeads + h) * D4 + e % D4;
        qv = q[at];
        dov = dOut[at];
      }
      qTile[e] = qv;
      doTile[e] = dov;
    }
    for (var r = lid; r < BQ; r += BK) {
      let i = i0 + r;
      var sr = -1;
      var l2 = 0.0;
      var rd = 0.0;
      if (i < P.queries) {
        sr = 0;
        if (P.useSegments != 0u) { sr = seg[P.queryOffset + i]; }
        l2 = lse[h * P.queries + i] * LOG2E;
        rd = rowDotIn[h * P.queries + i];
      }
      segRowTile[r] = sr;
      lseTile[r] = l2;
      rowDTile[r] = rd;
    }
    workgroupBarrier();
    if (keyInRange) {
      for (var r = 0u; r < BQ; r++) {
        let sr = segRowTile[r];
        if (sr >= 0 && sr == segK && key <= P.queryOffset + i0 + r) {
          var sc = 0.0;
          var dp = 0.0;
          for (var t = 0u; t < D4; t++) {
            sc += dot(kr[t], qTile[r * D4 + t]);
            dp += dot(vr[t], doTile[r * D4 + t]);
          }
          let p = exp2(sc - lseTile[r]);
          let ds = p * (dp - rowDTile[r]);
          for (var t = 0u; t < D4; t++) {
            dv[t] = fma(vec4<f32>(p), doTile[r * D4 + t], dv[t]);
            dk[t] = fma(vec4<f32>(ds), qTile[r * D4 + t], dk[t]);
          }
        }
      }
    }
  }
  if (!keyInRange) { return; }
  let outBase = (key * P.qHeads + h) * D4;
  for (var t = 0u; t < D4; t++) {
    dkOut[outBase + t] = dk[t] * P.scale;
    dvOut[outBase + t] = dv[t];
  }
}

// ---- reduceHeads ----------------------------------------------------------------------
@group(0) @binding(1) var<storage, read> dkHeads: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> dvHeads: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dkSum: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dvSum: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn reduceHeads(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let idx = tileOf(wg) * WG + lid; // over [Nk, Hkv, D4]
  if (idx >= P.keys * P.kvHeads * D4) { return; }
  let t = idx % D4;
  let kvHead = (idx / D4) % P.kvHeads;
  let key = idx / (D4 * P.kvHeads);
  let first = (key * P.qHeads + kvHead * P.group) * D4 + t;
  var sk = vec4<f32>(0.0);
  var sv = vec4<f32>(0.0);
  for (var g = 0u; g < P.group; g++) {
    sk += dkHeads[first + g * D4];
    sv += dvHeads[first + g * D4];
  }
  dkSum[idx] = sk;
  dvSum[idx] = sv;
}
