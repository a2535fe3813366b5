/** CPU reference for shaders/matmul.wgsl, written from the definition (f64 accumulation). */
export function matmulRef(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  M: number,
  N: number,
  K: number,
  opts: {
    transA?: boolean;
    transB?: boolean;
    batch?: number;
    alpha?: number;
    beta?: number;
    c?: ArrayLike<number>;
    bBroadcast?: boolean;
  } = {},
): Float32Array {
  const batch = opts.batch ?? 1;
  const alpha = opts.alpha ?? 1;
  const beta = opts.beta ?? 0;
  const out = new Float32Array(batch * M * N);
  for (let z = 0; z < batch; z++) {
    const ao = z * M * K;
    const bo = opts.bBroadcast ? 0 : z * K * N;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) {
          const av = a[ao + (opts.transA ? k * M + m : m * K + k)];
          const bv = b[bo + (opts.transB ? n * K + k : k * N + n)];
          s += av * bv;
        }
        const ci = z * M * N + m * N + n;
        out[ci] = alpha * s + (beta !== 0 ? beta * (opts.c?.[ci] ?? 0) : 0);
      }
    }
  }
  return out;
}
