// What the studio shows of preference tuning (stage dpo): whether the chosen datasets fit the
// stage, and the reward curves and latest metrics of a run. TRL's DPOTrainer logs these names
// (trl/trainer/dpo_trainer.py get_batch_loss_metrics), and LLaMA-Factory's trainer_log keeps them.

/** TRL's metrics in the order the Train step lists them. */
export const PREF_METRICS = [
  'rewards/accuracies',
  'rewards/margins',
  'rewards/chosen',
  'rewards/rejected',
  'logps/chosen',
  'logps/rejected',
] as const;
export type PrefMetric = (typeof PREF_METRICS)[number];

/**
 * Why the selected datasets do not fit the stage: pairs (format `ranking`) train only with stage dpo
 * (LLaMA-Factory picks its pairwise processor by stage), and stage dpo trains only on pairs.
 */
export function stageDataMismatch(stage: string, formats: readonly string[]): 'need-dpo' | 'need-pairs' | null {
  if (!formats.length) return null;
  if (stage !== 'dpo') return formats.includes('ranking') ? 'need-dpo' : null;
  return formats.some((f) => f !== 'ranking') ? 'need-pairs' : null;
}

interface MetricPoint {
  step: number;
  metrics?: Readonly<Record<string, number>>;
}
interface RunCurves {
  steps: readonly MetricPoint[];
  logs: readonly MetricPoint[];
}

/**
 * One metric per step for the chart: the per-step values when the run kept them, otherwise the
 * logged windows' means (records of runs whose steps carried no metrics).
 */
export function metricSeries(run: RunCurves, name: PrefMetric): { x: number; y: number }[] {
  const points = run.steps.some((p) => p.metrics) ? run.steps : run.logs;
  const out: { x: number; y: number }[] = [];
  for (const p of points) {
    const y = p.metrics?.[name];
    if (typeof y === 'number' && Number.isFinite(y)) out.push({ x: p.step, y });
  }
  return out;
}

/** The newest metrics of a run: its last logged window, or a later step's own; null before any. */
export function latestMetrics(run: RunCurves): { step: number; metrics: Record<string, number> } | null {
  const pick = (a: readonly MetricPoint[]) => {
    for (let i = a.length - 1; i >= 0; i--) if (a[i].metrics) return a[i];
    return null;
  };
  const log = pick(run.logs);
  const step = pick(run.steps);
  const p = log && (!step || step.step <= log.step) ? log : step;
  return p ? { step: p.step, metrics: { ...p.metrics! } } : null;
}
