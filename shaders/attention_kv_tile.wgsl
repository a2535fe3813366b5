// One key block [kb, kb + BC) of a KV head into workgroup memory (zeros and segment 0 past
// keyEnd), shared by the forward and the dQ kernels. The includer declares k, v, seg, kTile,
// vTile, segTile, BC, D4 and P (attention_common); `threads` is its workgroup size.
fn loadKvTile(kb: u32, keyEnd: u32, kvHead: u32, lid: u32, threads: u32) {
  for (var e = lid; e < BC * D4; e += threads) {
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
  for (var c = lid; c < BC; c += threads) {
    var sk = 0;
    if (P.useSegments != 0u && kb + c < keyEnd) { sk = seg[kb + c]; }
    segTile[c] = sk;
  }
}
