// Curve helpers for the loss chart.

/** LlamaBoard's smoothing (llamafactory/extras/ploting.py `smooth`): an EMA whose weight grows with the curve length. */
export function smooth(values: readonly number[]): number[] {
  if (!values.length) return [];
  const weight = 1.8 * (1 / (1 + Math.exp(-0.05 * values.length)) - 0.5);
  let last = values[0];
  return values.map((v) => (last = last * weight + (1 - weight) * v));
}
