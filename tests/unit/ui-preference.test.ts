// The studio's view of preference tuning: datasets that do not fit the stage, the reward curves and
// the newest metrics of a run record (per-step metrics when kept, else the logged windows).
import { describe, expect, it } from 'vitest';
import { latestMetrics, metricSeries, PREF_METRICS, stageDataMismatch } from '../../src/ui/preference-view.ts';
import { en } from '../../src/ui/locales/en.ts';
import { zh } from '../../src/ui/locales/zh.ts';

const m = (acc: number, margin: number) => ({ 'rewards/accuracies': acc, 'rewards/margins': margin });

describe('preference tuning in the studio', () => {
  it('says when the selected datasets do not fit the stage', () => {
    expect(stageDataMismatch('sft', ['alpaca', 'ranking'])).toBe('need-dpo');
    expect(stageDataMismatch('pt', ['ranking'])).toBe('need-dpo');
    expect(stageDataMismatch('sft', ['alpaca', 'sharegpt'])).toBeNull();
    expect(stageDataMismatch('dpo', ['ranking', 'ranking'])).toBeNull();
    expect(stageDataMismatch('dpo', ['ranking', 'alpaca'])).toBe('need-pairs');
    expect(stageDataMismatch('dpo', [])).toBeNull();
  });

  it('charts per-step metrics, skipping steps without them', () => {
    const run = {
      steps: [
        { step: 1, metrics: m(0, 0) },
        { step: 2, metrics: m(0.5, 0.12) },
        { step: 3, metrics: { 'rewards/accuracies': 1, 'rewards/margins': NaN } },
      ],
      logs: [{ step: 3, metrics: m(0.5, 0.06) }],
    };
    expect(metricSeries(run, 'rewards/accuracies')).toEqual([
      { x: 1, y: 0 },
      { x: 2, y: 0.5 },
      { x: 3, y: 1 },
    ]);
    expect(metricSeries(run, 'rewards/margins')).toEqual([
      { x: 1, y: 0 },
      { x: 2, y: 0.12 },
    ]);
    // A record whose steps carry no metrics: the logged windows.
    const logged = { steps: [{ step: 1 }, { step: 2 }], logs: [{ step: 2, metrics: m(0.75, 0.3) }] };
    expect(metricSeries(logged, 'rewards/accuracies')).toEqual([{ x: 2, y: 0.75 }]);
    expect(metricSeries({ steps: [{ step: 1 }], logs: [{ step: 1 }] }, 'rewards/margins')).toEqual([]);
  });

  it("takes the newest metrics: the last log, or a later step's own", () => {
    const steps = [
      { step: 1, metrics: m(0, 0) },
      { step: 2, metrics: m(1, 0.2) },
    ];
    expect(latestMetrics({ steps, logs: [{ step: 2, metrics: m(0.5, 0.1) }] })).toEqual({
      step: 2,
      metrics: m(0.5, 0.1),
    });
    expect(latestMetrics({ steps, logs: [{ step: 1, metrics: m(0, 0) }] })).toEqual({ step: 2, metrics: m(1, 0.2) });
    expect(latestMetrics({ steps: [{ step: 1 }], logs: [] })).toBeNull();
  });

  it('names every metric in both languages', () => {
    for (const table of [en, zh] as Record<string, string>[])
      for (const name of PREF_METRICS) expect(table[`train.pref.${name}`], name).toBeTruthy();
    expect(zh['train.pref.rewards/accuracies']).toMatch(/[\u4e00-\u9fff]/);
  });
});
