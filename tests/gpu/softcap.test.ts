import { describe, expect, it } from 'vitest';
import { softcapForward } from '../../src/engine/ops/softcap.ts';
import { expectClose } from '../cpu/compare.ts';
import { randn } from '../cpu/random.ts';
import { softcapRef } from '../cpu/softcap.ts';
import { runtime } from './context.ts';
import { scopePerTest } from './kernel-util.ts';

const open = scopePerTest();

describe(`softcap (${runtime})`, () => {
  it('cap·tanh(x / cap) in place, from tiny to saturated values (cap 30 and 0.5)', async () => {
    const s = await open();
    const host = new Float32Array([...randn(1000, 3, 20), 0, -0, 1e-30, -3e-8, 0.007, -7.4, 7.5, 1e4, -3e38, 3e38]);
    for (const cap of [30, 0.5]) {
      const x = s.f32(host, [host.length], 'logits');
      await s.run('softcap', (rec) => softcapForward(rec, { x, n: host.length, cap }));
      const got = await s.read(x);
      expect(got.every(Number.isFinite), 'finite').toBe(true);
      // Relative to each value (small logits keep their precision), plus a few ulps of the cap.
      expectClose(got, softcapRef(host, cap), { rtol: 2e-6, atol: 4e-7 * cap }, `cap ${cap}`);
      expect(Math.max(...got.map(Math.abs))).toBeLessThanOrEqual(cap);
    }
  });

  it('names the kernel on bad input', async () => {
    const s = await open();
    const x = s.f32(new Float32Array(4), [4], 'xs');
    await expect(s.run('bad', (rec) => softcapForward(rec, { x, n: 4, cap: 0 }))).rejects.toThrow(
      /softcap\.forward x.*xs.*cap must be a finite number > 0, got 0/,
    );
    await expect(s.run('bad', (rec) => softcapForward(rec, { x, n: 5, cap: 1 }))).rejects.toThrow(/x needs 5 elements/);
  });
});
