/**
 * CPU reference for shaders/swiglu.wgsl in f64: y = act(g)·u with act = silu(g) = g/(1+e^−g), or
 * Gemma's tanh-approximate GELU ½·g·(1 + tanh(√(2/π)·(g + 0.044715·g³))).
 */
export type RefActivation = 'silu' | 'gelu_tanh';

const BETA = Math.sqrt(2 / Math.PI);
const KAPPA = 0.044715;

function act(g: number, a: RefActivation): number {
  if (a === 'gelu_tanh') return 0.5 * g * (1 + Math.tanh(BETA * (g + KAPPA * g ** 3)));
  return g / (1 + Math.exp(-g));
}

/** d act / dg, derived by hand (checked against finite differences in the tests). */
function actGrad(g: number, a: RefActivation): number {
  if (a === 'gelu_tanh') {
    const t = Math.tanh(BETA * (g + KAPPA * g ** 3));
    return 0.5 * (1 + t) + 0.5 * g * (1 - t * t) * BETA * (1 + 3 * KAPPA * g * g);
  }
  const s = 1 / (1 + Math.exp(-g));
  return s * (1 + g * (1 - s));
}

export function swigluRef(g: ArrayLike<number>, u: ArrayLike<number>, a: RefActivation = 'silu'): Float64Array {
  return Float64Array.from(g as ArrayLike<number>, (gi, i) => act(gi, a) * u[i]);
}

/** dL/dg and dL/du from dL/dy. */
export function swigluBackwardRef(
  g: ArrayLike<number>,
  u: ArrayLike<number>,
  dy: ArrayLike<number>,
  a: RefActivation = 'silu',
) {
  const dGate = new Float64Array(g.length);
  const dUp = new Float64Array(g.length);
  for (let i = 0; i < g.length; i++) {
    dGate[i] = dy[i] * u[i] * actGrad(g[i], a);
    dUp[i] = dy[i] * act(g[i], a);
  }
  return { dGate, dUp };
}
