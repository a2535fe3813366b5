// Central finite differences in f64 on the CPU references (the backward check of every kernel):
// the GPU backward is then compared tightly against the CPU backward that this proves.
import { expect } from 'vitest';

/**
 * Checks dL/dinput for L = Σ loss(input): `f` maps a Float64Array input to the scalar loss;
 * `grad` is the analytic gradient. Probes `probes` coordinates (all when omitted).
 */
export function expectGradMatchesFd(
  f: (x: Float64Array) => number,
  x: Float64Array,
  grad: ArrayLike<number>,
  what: string,
  opts: { h?: number; rtol?: number; atol?: number; probes?: number[] } = {},
): void {
  const h = opts.h ?? 1e-6;
  const rtol = opts.rtol ?? 1e-6;
  const atol = opts.atol ?? 1e-8;
  const idx = opts.probes ?? [...x.keys()];
  for (const i of idx) {
    const keep = x[i];
    x[i] = keep + h;
    const up = f(x);
    x[i] = keep - h;
    const down = f(x);
    x[i] = keep;
    const fd = (up - down) / (2 * h);
    const err = Math.abs(fd - grad[i]);
    expect(err <= atol + rtol * Math.abs(fd), `${what}[${i}]: analytic ${grad[i]} vs finite difference ${fd}`).toBe(
      true,
    );
  }
}

/** Σ w_i·y_i with fixed random weights: a scalar loss whose dL/dy is `w`. */
export function dotLoss(y: ArrayLike<number>, w: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < y.length; i++) s += y[i] * w[i];
  return s;
}

export function toF64(a: ArrayLike<number>): Float64Array {
  return Float64Array.from(a as ArrayLike<number>);
}
