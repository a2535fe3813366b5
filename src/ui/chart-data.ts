// Curve helpers for the loss chart.

/** LlamaBoard's smoothing (llamafactory/extras/ploting.py `smooth`): an EMA whose weight grows with the curve length. */
export function smooth(values: readonly number[]): number[] {
  if (!values.length) return [];
  const weight = 1.8 * (1 / (1 + Math.exp(-0.05 * values.length)) - 0.5);
  let last = values[0];
  return values.map((v) => (last = last * weight + (1 - weight) * v));
}

/**
 * The newest training loss of a run: its last logged row (the mean over the logging window),
 * or the last per-step loss when a step came after it (or nothing was logged yet); null before
 * the first step.
 */
export function latestLoss(run: {
  steps: readonly { step: number; loss: number }[];
  logs: readonly { step: number; loss: number }[];
}): number | null {
  const log = run.logs.at(-1);
  const step = run.steps.at(-1);
  if (log && (!step || step.step <= log.step)) return log.loss;
  return step ? step.loss : null;
}
