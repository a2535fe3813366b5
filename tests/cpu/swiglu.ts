/** CPU reference for shaders/swiglu.wgsl in f64: y = silu(g)·u, silu(g) = g/(1+e^−g). */
export function swigluRef(g: ArrayLike<number>, u: ArrayLike<number>): Float64Array {
  return Float64Array.from(g as ArrayLike<number>, (gi, i) => (gi / (1 + Math.exp(-gi))) * u[i]);
}

/** dL/dg and dL/du from dL/dy, derived by hand (checked against finite differences in the tests). */
export function swigluBackwardRef(g: ArrayLike<number>, u: ArrayLike<number>, dy: ArrayLike<number>) {
  const dGate = new Float64Array(g.length);
  const dUp = new Float64Array(g.length);
  for (let i = 0; i < g.length; i++) {
    const s = 1 / (1 + Math.exp(-g[i]));
    dGate[i] = dy[i] * u[i] * s * (1 + g[i] * (1 - s));
    dUp[i] = dy[i] * g[i] * s;
  }
  return { dGate, dUp };
}
