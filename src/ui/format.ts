// Number formatting for the studio (locale-independent units).
import type { MessageKey } from './locales/en.ts';
import type { RunRecord } from '../worker/api.ts';

export function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) ((v /= 1024), u++);
  return `${u === 0 ? v : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[u]}`;
}

export function fmtCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e8 ? 0 : 1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

export function fmtDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return h > 0
    ? `${h}:${String(m).padStart(2, '0')}:${String(r).padStart(2, '0')}`
    : `${m}:${String(r).padStart(2, '0')}`;
}

/**
 * A compact number for chart ticks such as the learning-rate axis: `5e-3`, `2.5e-4`, `1.25e-3`,
 * `0` for zero, at most `digits` significant digits (trailing zeros dropped); values from 1 up to
 * 10 000 stay plain (`2`, `150`).
 */
export function fmtSci(v: number, digits = 3): string {
  if (!Number.isFinite(v)) return '—';
  if (v === 0 || Math.abs(v) < 1e-300) return '0';
  const abs = Math.abs(v);
  if (abs >= 1 && abs < 1e4) return String(Number(v.toPrecision(digits)));
  const [mant, exp] = v.toExponential(Math.max(0, digits - 1)).split('e');
  const m = mant.includes('.') ? mant.replace(/0+$/, '').replace(/\.$/, '') : mant;
  return `${m}e${Number(exp)}`;
}

type Translate = (key: MessageKey, vars?: Record<string, string | number>) => string;
export type RunPhase = 'loading' | 'preparing' | 'training' | 'evaluating' | 'saving' | 'idle';

/**
 * The one-line status of a run: "Training" while it trains, "Training: saving a checkpoint"
 * (训练中：正在保存检查点) while a running run is in another phase, "Paused", "Finished"… otherwise.
 */
export function runStatusText(status: RunRecord['status'], phase: RunPhase | null | undefined, tr: Translate): string {
  const s = tr(`train.status.${status}` as MessageKey);
  if (status !== 'running' || !phase || phase === 'training') return s;
  return tr('train.statusPhase', { status: s, phase: tr(`train.phase.${phase}` as MessageKey) });
}

/** A memory-planner fix as the studio says it: the planner's own (English) label, translated. */
export interface PlanFix {
  kind: string;
  change: { batchSize?: number; seqLen?: number };
  steps?: { kind: string; change: { batchSize?: number; seqLen?: number } }[];
}

/**
 * The planner's fix in the studio's language (the engine's own label is English, for the CLI):
 * auto-fit lists each step it takes, so the user sees what it chose before applying it.
 */
export function planFixText(tr: Translate, s: PlanFix, batchSize: number, cutoffLen: number): string {
  const one = (kind: string, change: PlanFix['change']) => {
    const batch = change.batchSize ?? 1;
    const vars = { batch, times: Math.ceil(batchSize / batch), cutoff: change.seqLen ?? cutoffLen };
    return tr(`plan.fix.${kind}` as MessageKey, vars);
  };
  if (s.kind !== 'autofit' || !s.steps) return one(s.kind, s.change);
  return tr('plan.fix.autofit', { steps: s.steps.map((st) => one(st.kind, st.change)).join('; ') });
}
