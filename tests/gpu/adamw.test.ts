import { describe, expect, it } from 'vitest';
import { ADAMW_BLOCK, adamwBlocks, adamwStep, type AdamwGroup, type AdamwSegment } from '../../src/engine/ops/adamw.ts';
import { gradNorm, gradNormPartials } from '../../src/engine/ops/grad_norm.ts';
import { adamwRef } from '../cpu/adamw.ts';
import { expectClose, relError } from '../cpu/compare.ts';
import { randn } from '../cpu/random.ts';
import { loadFixture } from '../reference/fixtures.ts';
import { runtime } from './context.ts';
import { scopePerTest } from './kernel-util.ts';

const open = scopePerTest();

const GAP = 777;

/** An arena with gaps between segments (filled with GAP) so stray writes show. */
function arena(segments: AdamwSegment[], size: number, fill: (seg: number, n: number) => Float32Array): Float32Array {
  const a = new Float32Array(size).fill(GAP);
  segments.forEach((s, k) => a.set(fill(k, s.count), s.offset));
  return a;
}

describe(`adamw (${runtime})`, () => {
  it('3 steps over segments of 1, 1023, 1025, 700 elements in two groups, with and without a clip coefficient', async () => {
    const s = await open();
    const segments: AdamwSegment[] = [
      { offset: 0, count: 1, group: 1 },
      { offset: 5, count: 1023, group: 0 },
      { offset: 1028, count: 1025, group: 1 },
      { offset: 2100, count: 700, group: 0 },
    ];
    const size = 2810;
    const groups: AdamwGroup[] = [
      { lr: 3e-3, weightDecay: 0.1 },
      { lr: 1e-3, weightDecay: 0 },
    ];
    const blocks = adamwBlocks(segments, size);
    expect(blocks.length / 4).toBe(1 + 1 + 2 + 1);
    const p0 = arena(segments, size, (k, n) => randn(n, 10 + k, 0.5));
    const params = s.f32(p0, [size], 'params', 'adapters');
    const m = s.f32(new Float32Array(size), [size], 'm', 'optimizer');
    const v = s.f32(new Float32Array(size), [size], 'v', 'optimizer');
    const blocksT = s.u32(blocks, [blocks.length], 'blocks');
    const stats = s.f32([0, 0.37, 0, 0], [4], 'stats');
    const refP = segments.map((sg) => Float64Array.from(p0.subarray(sg.offset, sg.offset + sg.count)));
    const refM = segments.map((sg) => new Float64Array(sg.count));
    const refV = segments.map((sg) => new Float64Array(sg.count));
    for (let step = 1; step <= 3; step++) {
      const gHost = arena(segments, size, (k, n) => randn(n, 100 * step + k, step === 2 ? 2 : 0.01));
      const grads = s.f32(gHost, [size], `grads${step}`, 'gradients');
      const useStats = step !== 1;
      await s.run(`adamw-${step}`, (rec) =>
        adamwStep(rec, {
          params,
          grads,
          m,
          v,
          blocks: blocksT,
          blockCount: blocks.length / 4,
          groups,
          step,
          gradStats: useStats ? { tensor: stats } : undefined,
          zeroGrads: step === 3,
        }),
      );
      segments.forEach((sg, k) =>
        adamwRef(refP[k], gHost.subarray(sg.offset, sg.offset + sg.count), refM[k], refV[k], {
          ...groups[sg.group],
          step,
          clipCoef: useStats ? Math.fround(0.37) : 1,
        }),
      );
      const g = await s.read(grads);
      if (step === 3)
        segments.forEach((sg) => expect(g.subarray(sg.offset, sg.offset + sg.count).every((x) => x === 0)).toBe(true));
      else expect([...g]).toEqual([...gHost]);
      expect(g[1]).toBe(GAP);
    }
    const [pGot, mGot, vGot] = [await s.read(params), await s.read(m), await s.read(v)];
    for (const [k, sg] of segments.entries()) {
      const at = (a: Float32Array) => a.subarray(sg.offset, sg.offset + sg.count);
      expectClose(at(pGot), refP[k], { rtol: 1e-5, atol: 1e-7 }, `params segment ${k}`);
      expectClose(at(mGot), refM[k], { rtol: 1e-5, atol: 1e-9 }, `m segment ${k}`);
      expectClose(at(vGot), refV[k], { rtol: 1e-5, atol: 1e-12 }, `v segment ${k}`);
    }
    for (const i of [1, 4, 1028 + 1025, 2099, 2800, 2809]) expect(pGot[i], `gap ${i}`).toBe(GAP);
  });

  it('skips the update when the gradient stats flag inf/NaN (still zeroes the grads)', async () => {
    const s = await open();
    const segments: AdamwSegment[] = [{ offset: 0, count: 300, group: 0 }];
    const blocks = adamwBlocks(segments, 300);
    const p0 = randn(300, 1);
    const params = s.f32(p0, [300], 'params');
    const grads = s.f32(randn(300, 2), [300], 'grads');
    const m = s.f32(new Float32Array(300), [300], 'm');
    const v = s.f32(new Float32Array(300), [300], 'v');
    const stats = s.f32([Infinity, 0, Infinity, 1], [4], 'stats');
    await s.run('adamw-skip', (rec) =>
      adamwStep(rec, {
        params,
        grads,
        m,
        v,
        blocks: s.u32(blocks, [4], 'blocks'),
        blockCount: 1,
        groups: [{ lr: 1e-3, weightDecay: 0.01 }],
        step: 1,
        gradStats: { tensor: stats },
        zeroGrads: true,
      }),
    );
    expect([...(await s.read(params))]).toEqual([...p0]);
    expect((await s.read(m)).every((x) => x === 0)).toBe(true);
    expect((await s.read(grads)).every((x) => x === 0)).toBe(true);
  });

  it('matches torch.optim.AdamW + clip_grad_norm_ for 3 steps (param groups, weight decay 0 and 0.01)', async () => {
    const s = await open();
    const fx = await loadFixture('adamw');
    const counts = fx.meta.counts as number[];
    const groups = fx.meta.groups as AdamwGroup[];
    // Segments packed with one-element gaps, as an engine arena with alignment padding would be.
    const segments: AdamwSegment[] = [];
    let at = 0;
    counts.forEach((count, k) => {
      segments.push({ offset: at, count, group: k });
      at += count + 1;
    });
    const size = at;
    const pack = (flat: Float32Array, gap: number) => {
      const a = new Float32Array(size).fill(gap);
      let o = 0;
      segments.forEach((sg) => {
        a.set(flat.subarray(o, o + sg.count), sg.offset);
        o += sg.count;
      });
      return a;
    };
    const unpack = (a: Float32Array) =>
      Float32Array.from(segments.flatMap((sg) => [...a.subarray(sg.offset, sg.offset + sg.count)]));
    const blocks = adamwBlocks(segments, size);
    const params = s.f32(pack(fx.f32('start'), GAP), [size], 'params');
    const m = s.f32(new Float32Array(size), [size], 'm');
    const v = s.f32(new Float32Array(size), [size], 'v');
    const grads = s.f32(new Float32Array(size), [size], 'grads');
    const blocksT = s.u32(blocks, [blocks.length], 'blocks');
    const stats = s.nan(4, 'stats');
    const partials = s.nan(gradNormPartials([size]), 'partials');
    for (let step = 1; step <= 3; step++) {
      await s.run(`adamw-torch-${step}`, async (rec) => {
        s.gpu.device.queue.writeBuffer(grads.buf.buffer, 0, pack(fx.f32(`grads${step}`), 0));
        await gradNorm(rec, { ranges: [{ grads }], partials, stats, maxNorm: fx.meta.maxNorm });
        await adamwStep(rec, {
          params,
          grads,
          m,
          v,
          blocks: blocksT,
          blockCount: blocks.length / 4,
          groups,
          step,
          gradStats: { tensor: stats },
          zeroGrads: true,
        });
      });
      const norm = (await s.read(stats))[0];
      expect(Math.abs(norm - fx.meta.norms[step - 1]) / fx.meta.norms[step - 1]).toBeLessThan(1e-6);
      const got = await s.read(params);
      expect(relError(unpack(got), fx.f32(`params${step}`)), `params after step ${step}`).toBeLessThan(1e-6);
      expect(got[counts[0]]).toBe(GAP);
    }
    expect(relError(unpack(await s.read(m)), fx.f32('m3'))).toBeLessThan(1e-5);
    expect(relError(unpack(await s.read(v)), fx.f32('v3'))).toBeLessThan(1e-5);
  });

  it('block table validation and kernel errors name the problem', async () => {
    expect(() =>
      adamwBlocks(
        [
          { offset: 0, count: 10, group: 0 },
          { offset: 5, count: 10, group: 0 },
        ],
        100,
      ),
    ).toThrow(/overlaps/);
    expect(() => adamwBlocks([{ offset: 95, count: 10, group: 0 }], 100)).toThrow(/exceeds the arena of 100/);
    expect(() => adamwBlocks([{ offset: 0, count: 10, group: 16 }], 100)).toThrow(/group 16/);
    expect(adamwBlocks([{ offset: 0, count: 2 * ADAMW_BLOCK + 1, group: 3 }], 1e6).length).toBe(12);
    const s = await open();
    const t = s.f32(new Float32Array(8), [8], 'pa');
    const u = s.f32(new Float32Array(4), [4], 'small');
    const b = s.u32([0, 8, 0, 0], [4], 'blocks');
    await expect(
      s.run('bad', (rec) =>
        adamwStep(rec, {
          params: t,
          grads: u,
          m: s.nan(8, 'm'),
          v: s.nan(8, 'v'),
          blocks: b,
          blockCount: 1,
          groups: [{ lr: 1, weightDecay: 0 }],
          step: 1,
        }),
      ),
    ).rejects.toThrow(/adamw.*grads needs 8 elements.*small\[4:f32\]/);
    await expect(
      s.run('bad', (rec) =>
        adamwStep(rec, {
          params: t,
          grads: s.nan(8, 'g'),
          m: s.nan(8, 'm'),
          v: s.nan(8, 'v'),
          blocks: b,
          blockCount: 1,
          groups: [{ lr: 1, weightDecay: 0 }],
          step: 0,
        }),
      ),
    ).rejects.toThrow(/step must be an integer ≥ 1/);
  });
});
