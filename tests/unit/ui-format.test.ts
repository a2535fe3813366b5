// Pure formatting of the Train step: learning-rate ticks, the latest loss, the status line (en + 中文).
import { describe, expect, it } from 'vitest';
import { fmtSci, planFixText, runStatusText, type RunPhase } from '../../src/ui/format.ts';
import { latestLoss } from '../../src/ui/chart-data.ts';
import { en, type MessageKey } from '../../src/ui/locales/en.ts';
import { zh } from '../../src/ui/locales/zh.ts';

const translator =
  (table: Record<MessageKey, string>) =>
  (key: MessageKey, vars: Record<string, string | number> = {}) =>
    table[key].replace(/\{(\w+)\}/g, (_, k: string) => String(vars[k]));

describe('fmtSci (learning-rate ticks)', () => {
  it('writes compact scientific notation', () => {
    expect(fmtSci(0.005)).toBe('5e-3');
    expect(fmtSci(0.00025)).toBe('2.5e-4');
    expect(fmtSci(0.00125)).toBe('1.25e-3');
    expect(fmtSci(2e-5)).toBe('2e-5');
    expect(fmtSci(0.0499)).toBe('4.99e-2');
    expect(fmtSci(-0.001)).toBe('-1e-3');
  });
  it('rounds away float noise and long schedule values', () => {
    expect(fmtSci(0.0030000000000000005)).toBe('3e-3');
    expect(fmtSci(0.0049993)).toBe('5e-3');
    expect(fmtSci(0.00999999)).toBe('1e-2');
    expect(fmtSci(0.0049993, 5)).toBe('4.9993e-3');
  });
  it('writes 0 as 0, plain numbers from 1 on, and a dash for non-numbers', () => {
    expect(fmtSci(0)).toBe('0');
    expect(fmtSci(-0)).toBe('0');
    expect(fmtSci(1)).toBe('1');
    expect(fmtSci(2.5)).toBe('2.5');
    expect(fmtSci(150)).toBe('150');
    expect(fmtSci(12345)).toBe('1.23e4');
    expect(fmtSci(NaN)).toBe('—');
    expect(fmtSci(Infinity)).toBe('—');
  });
});

describe('latestLoss', () => {
  it('is null before the first step', () => {
    expect(latestLoss({ steps: [], logs: [] })).toBeNull();
  });
  it('is the per-step loss while nothing is logged yet', () => {
    expect(
      latestLoss({
        steps: [
          { step: 1, loss: 3.5 },
          { step: 2, loss: 3.25 },
        ],
        logs: [],
      }),
    ).toBe(3.25);
  });
  it('is the logged (window-mean) loss at a logging step', () => {
    expect(
      latestLoss({
        steps: [
          { step: 1, loss: 3.5 },
          { step: 2, loss: 3.25 },
        ],
        logs: [{ step: 2, loss: 3.375 }],
      }),
    ).toBe(3.375);
  });
  it('is the newest per-step loss after the last logging step', () => {
    expect(
      latestLoss({
        steps: [
          { step: 2, loss: 3.25 },
          { step: 3, loss: 3.0 },
        ],
        logs: [{ step: 2, loss: 3.375 }],
      }),
    ).toBe(3.0);
  });
  it('uses the log when the per-step points were not kept', () => {
    expect(latestLoss({ steps: [], logs: [{ step: 10, loss: 2 }] })).toBe(2);
  });
});

describe('runStatusText', () => {
  const phases: RunPhase[] = ['loading', 'preparing', 'training', 'evaluating', 'saving', 'idle'];
  it('names the phase once: "Training", or "Training: <what it is doing>"', () => {
    const tr = translator(en);
    expect(runStatusText('running', 'training', tr)).toBe('Training');
    expect(runStatusText('running', 'saving', tr)).toBe('Training: saving a checkpoint');
    expect(runStatusText('running', 'loading', tr)).toBe('Training: loading the model onto the GPU');
    expect(runStatusText('running', null, tr)).toBe('Training');
    expect(runStatusText('paused', 'idle', tr)).toBe('Paused');
    expect(runStatusText('done', 'training', tr)).toBe('Finished');
  });
  it('reads well in 中文', () => {
    const tr = translator(zh);
    expect(runStatusText('running', 'training', tr)).toBe('训练中');
    expect(runStatusText('running', 'evaluating', tr)).toBe('训练中：正在计算验证损失');
    expect(runStatusText('stopped', 'training', tr)).toBe('已停止');
  });
  it('never repeats a word or leaves a stray separator in either language', () => {
    for (const table of [en, zh]) {
      const tr = translator(table);
      for (const p of phases) {
        const s = runStatusText('running', p, tr);
        expect(s).not.toMatch(/·|\{|\}/);
        expect(s).not.toMatch(/^\s|\s$/);
        const status = tr('train.status.running');
        expect(s.startsWith(status), s).toBe(true);
        expect(s.slice(status.length).toLowerCase(), s).not.toContain(status.toLowerCase()); // not "Training · training
      }
    }
  });
});

describe('memory-plan fixes in the studio language', () => {
  it('English is the engine label word for word; every kind has a 中文 text', async () => {
    const { knownConfig } = await import('../../src/engine/plan/known-configs.ts');
    const { planMemory } = await import('../../src/engine/plan/plan.ts');
    const batchSize = 8;
    const p = planMemory(knownConfig('Qwen/Qwen2.5-1.5B-Instruct'), {
      method: 'lora',
      batchSize,
      seqLen: 2048,
      gradientCheckpointing: false,
    });
    const fixes = p.suggestions(1e9);
    expect(fixes.map((s) => s.kind).sort()).toEqual([
      'autofit',
      'batch',
      'checkpointing',
      'cutoff',
      'lossChunk',
      'nf4Head',
      'qlora',
    ]);
    for (const s of fixes) {
      expect(planFixText(translator(en), s, batchSize, 2048)).toBe(s.label);
      expect(planFixText(translator(zh), s, batchSize, 2048)).toMatch(/[\u4e00-\u9fff]/);
    }
    // Auto-fit names every step it takes, in either language.
    const auto = fixes.find((s) => s.kind === 'autofit')!;
    expect(auto.steps!.length).toBeGreaterThan(1);
    for (const st of auto.steps!) expect(auto.label).toContain(st.label);
    const zhAuto = planFixText(translator(zh), auto, batchSize, 2048);
    expect(zhAuto.split('; ').length).toBe(auto.steps!.length);
  });
});
