import { expect } from 'vitest';

export interface Tolerance {
  rtol: number;
  atol: number;
}

/** Worst |a−e| − rtol·|e| over all elements, with the index, so a failure says where. */
export function worstMismatch(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance) {
  let worst = { index: -1, actual: 0, expected: 0, excess: -Infinity, maxAbs: 0, maxRel: 0 };
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i];
    const e = expected[i];
    const diff = Math.abs(a - e);
    const excess = Number.isNaN(a) !== Number.isNaN(e) ? Infinity : diff - (tol.atol + tol.rtol * Math.abs(e));
    worst.maxAbs = Math.max(worst.maxAbs, diff);
    if (Math.abs(e) > tol.atol) worst.maxRel = Math.max(worst.maxRel, diff / Math.abs(e));
    if (excess > worst.excess) worst = { ...worst, index: i, actual: a, expected: e, excess };
  }
  return worst;
}

export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance, what = ''): void {
  expect(actual.length, `${what} length`).toBe(expected.length);
  const w = worstMismatch(actual, expected, tol);
  const msg = `${what}: worst at [${w.index}] got ${w.actual}, want ${w.expected} (max abs err ${w.maxAbs.toExponential(2)}, max rel ${w.maxRel.toExponential(2)})`;
  expect(w.excess <= 0, msg).toBe(true);
}

/** max |a−e| / max |e|: the relative error measure used against PyTorch fixtures. */
export function relError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    num = Math.max(num, Math.abs(actual[i] - expected[i]));
    den = Math.max(den, Math.abs(expected[i]));
  }
  return den === 0 ? num : num / den;
}
