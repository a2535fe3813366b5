// Tiles of ROWS (query, head) rows of one KV head, L lanes per row; the forward and the dQ kernels
// walk key blocks over the same tile, so they agree here on who owns which row and where the
// causal mask ends for the whole tile. The includer declares L, ROWS and seg besides the names below.
struct QueryRow {
  inTile: u32,  // row within the tile
  lane: u32,
  i: u32,       // query index
  h: u32,       // query head
  pos: u32,     // absolute position (after the KV cache's earlier tokens)
  segment: i32, // segment id (< 0: padding)
  inRange: bool,
  live: bool,   // in range and not padding
}

fn queryRow(tile: u32, kvHead: u32, lid: u32) -> QueryRow {
  var r: QueryRow;
  r.inTile = lid / L;
  r.lane = lid % L;
  let rowsTotal = P.queries * P.group;
  let firstRow = tile * ROWS;
  let row = firstRow + r.inTile;
  let rowC = min(row, rowsTotal - 1u); // out-of-range rows still load valid data, then write nothing
  r.i = rowC / P.group;
  r.h = kvHead * P.group + rowC % P.group;
  r.pos = P.queryOffset + r.i;
  r.segment = 0;
  if (P.useSegments != 0u) { r.segment = seg[r.pos]; }
  r.inRange = row < rowsTotal;
  r.live = r.inRange && r.segment >= 0;
  return r;
}

// Keys past the tile's last query are masked for every row (causal). Kept out of QueryRow: loop
// bounds around barriers must be uniform, and a struct holding per-thread fields is not.
fn tileKeyEnd(tile: u32) -> u32 {
  let rowsTotal = P.queries * P.group;
  let lastQuery = (min(tile * ROWS + ROWS, rowsTotal) - 1u) / P.group;
  return min(P.keys, P.queryOffset + lastQuery + 1u);
}

// Keys before the tile's first query's window are masked for every row (sliding window), so the
// key loop starts there: O(N·window) work instead of O(N²). Uniform like tileKeyEnd.
fn tileKeyBegin(tile: u32) -> u32 {
  return windowStart(P.queryOffset + tile * ROWS / P.group);
}

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
