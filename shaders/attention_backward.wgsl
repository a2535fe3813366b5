// FlashAttention-2 backward (Dao 2023, "FlashAttention-2", Algorithm 2; flash-attention
// `flash_attn/flash_attn_triton.py`):
// P is recomputed from the saved LSE, so nothing of size N×Nk is ever stored. WGSL has no float
// atomics, so dQ and dK/dV are separate passes that each own their outputs.
// Entry points (layouts and masking rule in include/attention_common.wgsl):
//   rowDot       dO, O → rowDot [Hq, N] = Σ_d dO·O                  one thread per (query, head)
//   dq           Q, K, V, seg, dO, LSE, rowDot → dQ [N, Hq, D]      rows and lanes as the forward
//                (shaders/attention.wgsl), K/V blocks in workgroup memory
//   dkdv         Q, K, V, seg, dO, LSE, rowDot → dK/dV of one query head [Nk, Hq, D]: LK lanes per
//                key (interleaved vec4 columns, so k, v, dk, dv cost 4·D/LK registers), Q/dO
//                blocks in workgroup memory, walking query blocks from the diagonal.
//                With group == 1 this is dK/dV itself; otherwise per-head partials …
//   reduceHeads  … summed over the `group` query heads of each KV head → dK, dV [Nk, Hkv, D].
#include "attention_common"

const D4: u32 = {{D4}};       // head_dim / 4
const L: u32 = {{L}};         // dq: lanes per row
const ROWS: u32 = {{ROWS}};   // dq: rows per workgroup
const BC: u32 = {{BC}};       // dq: keys per block in workgroup memory
const PARTQ: u32 = {{PARTQ}}; // dq: ROWS·BC·L partial dots when L > 1, else 1 (unused)
const LK: u32 = {{LK}};       // dkdv: lanes per key
const BK: u32 = {{BK}};       // dkdv: keys per workgroup
const BQ: u32 = {{BQ}};       // dkdv: query rows per block in workgroup memory
const PARTK: u32 = {{PARTK}}; // dkdv: BK·BQ·LK partial dots when LK > 1, else 1 (unused)
const DL4: u32 = D4 / L;
const DK4: u32 = D4 / LK;
const WGQ: u32 = ROWS * L;
const WGK: u32 = BK * LK;
const WG: u32 = 64u;          // rowDot, reduceHeads

// ---- rowDot ---------------------------------------------------------------------------
@group(0) @binding(1) var<storage, read> rdDOut: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> rdOut: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> rdLse: array<f32>;
// [D; LSE], each [Hq, N]: dq and dkdv read both through one binding.
@group(0) @binding(4) var<storage, read_write> rdRowStats: array<f32>;

@compute @workgroup_size(WG)
fn rowDot(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let idx = tileOf(wg) * WG + lid;
  if (idx >= P.queries * P.qHeads) { return; }
  let i = idx / P.qHeads;
  let h = idx % P.qHeads;
  var acc = 0.0;
  for (var t = 0u; t < D4; t++) { acc += dot(rdDOut[idx * D4 + t], rdOut[idx * D4 + t]); }
  let at = h * P.queries + i;
  rdRowStats[at] = acc;
  rdRowStats[P.qHeads * P.queries + at] = rdLse[at];
}

// ---- shared bindings of dq and dkdv ------------------------------------------------------
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> seg: array<i32>;
@group(0) @binding(5) var<storage, read> dOut: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> rowStats: array<f32>; // [D; LSE]

fn rowDotOf(h: u32, i: u32) -> f32 { return rowStats[h * P.queries + i]; }
fn lseOf(h: u32, i: u32) -> f32 { return rowStats[(P.qHeads + h) * P.queries + i]; }

// (P, dS) of one visible pair from its raw base-2 score s2 (scale·log2(e)·q·k), the row's LSE in
// base 2 and dP − D: dS = P·(dP − D), times 1 − tanh² of the cap's argument when capping.
fn probAndGrad(s2: f32, lse2: f32, dpMinusD: f32) -> vec2<f32> {
  if (P.capLog2 > 0.0) {
    let t = capTanh(s2);
    let p = exp2(P.capLog2 * t - lse2);
    return vec2<f32>(p, p * dpMinusD * (1.0 - t * t));
  }
  let p = exp2(s2 - lse2);
  return vec2<f32>(p, p * dpMinusD);
}

// ---- dq -------------------------------------------------------------------------------
// dQ_i = scale · Σ_j P_ij (dP_ij − D_i) c'_ij K_j, with P_ij = exp(c_ij − LSE_i), dP_ij = dO_i·v_j,
// c_ij the (capped) score and c'_ij its derivative by the raw scaled score s_ij = scale·q_i·k_j:
// 1 without capping; with c = softcap·tanh(s / softcap), c' = 1 − tanh²(s / softcap).
@group(0) @binding(7) var<storage, read_write> dqOut: array<vec4<f32>>;

var<workgroup> kTile: array<vec4<f32>, BC * D4>;
var<workgroup> vTile: array<vec4<f32>, BC * D4>;
var<workgroup> segTile: array<i32, BC>;
var<workgroup> partQS: array<f32, PARTQ>;
var<workgroup> partQP: array<f32, PARTQ>;
#include "attention_kv_tile"

@compute @workgroup_size(WGQ)
fn dq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tile = tileOf(wg);
  if (tile >= P.tiles) { return; } // uniform per workgroup
  let kvHead = wg.y;
  let qrow = queryRow(tile, kvHead, lid);
  let keyEnd = tileKeyEnd(tile);

  var qr: array<vec4<f32>, DL4>;
  var dor: array<vec4<f32>, DL4>;
  var acc: array<vec4<f32>, DL4>;
  let base = (qrow.i * P.qHeads + qrow.h) * D4 + qrow.lane;
  for (var t = 0u; t < DL4; t++) {
    qr[t] = q[base + t * L] * P.scaleLog2;
    dor[t] = dOut[base + t * L];
    acc[t] = vec4<f32>(0.0);
  }
  let lse2 = lseOf(qrow.h, qrow.i) * LOG2E;
  let rowD = rowDotOf(qrow.h, qrow.i);
  var s: array<f32, BC>;
  var dp: array<f32, BC>;

  for (var kb = tileKeyBegin(tile); kb < keyEnd; kb += BC) {
    workgroupBarrier();
    loadKvTile(kb, keyEnd, kvHead, lid, WGQ);
    workgroupBarrier();
    let work = qrow.live && kb <= qrow.pos && (P.window == 0u || kb + BC + P.window > qrow.pos + 1u);
    if (work) {
      for (var c = 0u; c < BC; c++) {
        var sc = 0.0;
        var pc = 0.0;
        if (keyInWindow(kb + c, qrow.pos) && segTile[c] == qrow.segment) {
          for (var t = 0u; t < DL4; t++) {
            sc += dot(qr[t], kTile[c * D4 + t * L + qrow.lane]);
            pc += dot(dor[t], vTile[c * D4 + t * L + qrow.lane]);
          }
        }
        s[c] = sc;
        dp[c] = pc;
      }
    }
    if (L > 1u) {
      for (var c = 0u; c < BC; c++) {
        partQS[(qrow.inTile * BC + c) * L + qrow.lane] = s[c];
        partQP[(qrow.inTile * BC + c) * L + qrow.lane] = dp[c];
      }
      workgroupBarrier();
      for (var c = 0u; c < BC; c++) {
        var sc = 0.0;
        var pc = 0.0;
        for (var j = 0u; j < L; j++) {
          sc += partQS[(qrow.inTile * BC + c) * L + j];
          pc += partQP[(qrow.inTile * BC + c) * L + j];
        }
        s[c] = sc;
        dp[c] = pc;
      }
    }
    if (work) {
      for (var c = 0u; c < BC; c++) {
        if (keyInWindow(kb + c, qrow.pos) && segTile[c] == qrow.segment) {
          let ds = probAndGrad(s[c], lse2, dp[c] - rowD).y;
          for (var t = 0u; t < DL4; t++) { acc[t] = fma(vec4<f32>(ds), kTile[c * D4 + t * L + qrow.lane], acc[t]); }
        }
      }
    }
  }
  if (!qrow.inRange) { return; }
  let outScale = select(0.0, P.scale, qrow.live);
  for (var t = 0u; t < DL4; t++) { dqOut[base + t * L] = acc[t] * outScale; }
}

// ---- dkdv -----------------------------------------------------------------------------
// For key j of query head h: dV_j = Σ_i P_ij dO_i,  dK_j = scale · Σ_i P_ij (dP_ij − D_i) c'_ij Q_i.
@group(0) @binding(7) var<storage, read_write> dkOut: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> dvOut: array<vec4<f32>>;

var<workgroup> qTile: array<vec4<f32>, BQ * D4>;
var<workgroup> doTile: array<vec4<f32>, BQ * D4>;
var<workgroup> lseTile: array<f32, BQ>;   // log2 units
var<workgroup> rowDTile: array<f32, BQ>;
var<workgroup> segRowTile: array<i32, BQ>; // < 0: padding or past the last query
var<workgroup> partKS: array<f32, PARTK>;
var<workgroup> partKP: array<f32, PARTK>;

@compute @workgroup_size(WGK)
fn dkdv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tile = tileOf(wg);
  if (tile >= P.tiles) { return; } // uniform per workgroup
  let h = wg.y;
  let kvHead = h / P.group;
  let keyLocal = lid / LK;
  let lane = lid % LK;
  let kb = tile * BK;
  let key = kb + keyLocal;
  let keyInRange = key < P.keys;
  let keyC = min(key, P.keys - 1u);
  var segK = 0;
  if (P.useSegments != 0u) { segK = seg[keyC]; }

  var kr: array<vec4<f32>, DK4>;
  var vr: array<vec4<f32>, DK4>;
  var dk: array<vec4<f32>, DK4>;
  var dv: array<vec4<f32>, DK4>;
  let kvBase = (keyC * P.kvHeads + kvHead) * D4 + lane;
  for (var t = 0u; t < DK4; t++) {
    kr[t] = k[kvBase + t * LK] * P.scaleLog2;
    vr[t] = v[kvBase + t * LK];
    dk[t] = vec4<f32>(0.0);
    dv[t] = vec4<f32>(0.0);
  }
  var s: array<f32, BQ>;
  var dp: array<f32, BQ>;
  // Causal: queries before position kb see none of this block's keys. Sliding window: queries at
  // positions ≥ lastKey + window see none either, so the loop covers O(window) queries.
  var iStart = 0u;
  if (kb > P.queryOffset) { iStart = kb - P.queryOffset; }
  var iEnd = P.queries;
  if (P.window != 0u) {
    let reach = min(kb + BK, P.keys) - 1u + P.window; // first position past the block's windows
    iEnd = select(0u, min(P.queries, reach - P.queryOffset), reach > P.queryOffset);
  }

  for (var i0 = iStart; i0 < iEnd; i0 += BQ) {
    workgroupBarrier();
    for (var e = lid; e < BQ * D4; e += WGK) {
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
    for (var r = lid; r < BQ; r += WGK) {
      let i = i0 + r;
      var sr = -1;
      var l2 = 0.0;
      var rd = 0.0;
      if (i < P.queries) {
        sr = 0;
        if (P.useSegments != 0u) { sr = seg[P.queryOffset + i]; }
        l2 = lseOf(h, i) * LOG2E;
        rd = rowDotOf(h, i);
      }
      segRowTile[r] = sr;
      lseTile[r] = l2;
      rowDTile[r] = rd;
    }
    workgroupBarrier();
    if (keyInRange) {
      for (var r = 0u; r < BQ; r++) {
        var sc = 0.0;
        var pc = 0.0;
        let sr = segRowTile[r];
        if (sr >= 0 && sr == segK && keyInWindow(key, P.queryOffset + i0 + r)) {
          for (var t = 0u; t < DK4; t++) {
            sc += dot(kr[t], qTile[r * D4 + t * LK + lane]);
            pc += dot(vr[t], doTile[r * D4 + t * LK + lane]);
          }
        }
        s[r] = sc;
        dp[r] = pc;
      }
    }
    if (LK > 1u) {
      for (var r = 0u; r < BQ; r++) {
        partKS[(keyLocal * BQ + r) * LK + lane] = s[r];
        partKP[(keyLocal * BQ + r) * LK + lane] = dp[r];
      }
      workgroupBarrier();
      for (var r = 0u; r < BQ; r++) {
        var sc = 0.0;
        var pc = 0.0;
        for (var j = 0u; j < LK; j++) {
          sc += partKS[(keyLocal * BQ + r) * LK + j];
          pc += partKP[(keyLocal * BQ + r) * LK + j];
        }
        s[r] = sc;
        dp[r] = pc;
      }
    }
    if (keyInRange) {
      for (var r = 0u; r < BQ; r++) {
        let sr = segRowTile[r];
        if (sr >= 0 && sr == segK && keyInWindow(key, P.queryOffset + i0 + r)) {
          let pg = probAndGrad(s[r], lseTile[r], dp[r] - rowDTile[r]);
          let p = pg.x;
          let ds = pg.y;
          for (var t = 0u; t < DK4; t++) {
            dv[t] = fma(vec4<f32>(p), doTile[r * D4 + t * LK + lane], dv[t]);
            dk[t] = fma(vec4<f32>(ds), qTile[r * D4 + t * LK + lane], dk[t]);
          }
        }
      }
    }
  }
  if (!keyInRange) { return; }
  let outBase = (key * P.qHeads + h) * D4 + lane;
  for (var t = 0u; t < DK4; t++) {
    dkOut[outBase + t * LK] = dk[t] * P.scale;
    dvOut[outBase + t * LK] = dv[t];
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
