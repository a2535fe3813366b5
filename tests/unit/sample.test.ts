import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeAll,
  decodeLoop,
  GenerateError,
  TextStreamer,
  type DecodeOptions,
  type LogitsStep,
} from '../../src/engine/generate/decode.ts';
import {
  applyRepetitionPenalty,
  applyTemperature,
  applyTopK,
  applyTopP,
  argmax,
  drawFrom,
  kthLargest,
  processLogits,
  sampleToken,
  SamplingError,
  seededRng,
  softmax,
  type SamplingOptions,
} from '../../src/engine/generate/sample.ts';

const NEG = -Infinity;
const f32 = (xs: number[]) => Float32Array.from(xs);
const SAMPLE: SamplingOptions = { doSample: true, temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1 };
const GREEDY: SamplingOptions = { ...SAMPLE, doSample: false };

describe('repetition penalty (RepetitionPenaltyLogitsProcessor)', () => {
  it('divides positive and multiplies negative scores of seen tokens, once per distinct id', () => {
    const s = f32([2, -2, 3, 0.5]);
    applyRepetitionPenalty(s, [0, 1, 1, 1, 0], 2);
    expect(Array.from(s)).toEqual([1, -4, 3, 0.5]);
  });
  it('1.0 is a no-op and out-of-vocabulary history ids are an error', () => {
    const s = f32([1, 2]);
    applyRepetitionPenalty(s, [0, 1], 1);
    expect(Array.from(s)).toEqual([1, 2]);
    expect(() => applyRepetitionPenalty(s, [5], 1.1)).toThrow(/outside the vocabulary/);
  });
  it('applies in greedy mode too and can change the argmax', () => {
    const logits = f32([3, 2.5, -1]);
    expect(sampleToken(logits, [], GREEDY, () => 0)).toBe(0);
    expect(sampleToken(logits, [0], { ...GREEDY, repetitionPenalty: 1.5 }, () => 0)).toBe(1);
  });
});

describe('temperature / top-k / top-p warpers', () => {
  it('temperature divides every score', () => {
    const s = f32([1, -2, 4, NEG]);
    applyTemperature(s, 0.5);
    expect(Array.from(s)).toEqual([2, -4, 8, NEG]);
  });
  it('top-k keeps the k largest and everything tied with the k-th', () => {
    const s = f32([1, 5, 3, 3, 0, 3]);
    applyTopK(s, 2);
    expect(Array.from(s)).toEqual([NEG, 5, 3, 3, NEG, 3]);
    const t = f32([1, 2, 3]);
    applyTopK(t, 0);
    applyTopK(t, 7);
    expect(Array.from(t)).toEqual([1, 2, 3]);
    const u = f32([4, 1, 2]);
    applyTopK(u, 1);
    expect(Array.from(u)).toEqual([4, NEG, NEG]);
  });
  it('top-p drops tokens whose ascending cumulative probability is ≤ 1 − p (transformers docstring example)', () => {
    // sorted probs 0.1, 0.15, 0.2, 0.25, 0.3 → cumulative 0.1, 0.25, 0.45, 0.7, 1.0; p = 0.7 removes the first two.
    const probs = [0.25, 0.1, 0.3, 0.15, 0.2];
    const s = f32(probs.map(Math.log));
    applyTopP(s, 0.7);
    expect(Array.from(s).map((x) => x === NEG)).toEqual([false, true, false, true, false]);
  });
  it('top-p always keeps the most probable token, and 1.0 keeps all', () => {
    const s = f32([0, 10, 1]);
    applyTopP(s, 1e-6);
    expect(Array.from(s)).toEqual([NEG, 10, NEG]);
    const t = f32([0, 1, 2]);
    applyTopP(t, 1);
    expect(Array.from(t)).toEqual([0, 1, 2]);
  });
  it('top-p leaves already-removed tokens removed and ignores them in the mass', () => {
    const s = f32([NEG, Math.log(0.5), Math.log(0.3), Math.log(0.2)]);
    applyTopP(s, 0.75); // cumulative ascending: 0.2, 0.5, 1.0 → remove 0.2 only (0.5 > 0.25)
    expect(Array.from(s).map((x) => x === NEG)).toEqual([true, false, false, true]);
  });
  it('greedy ignores temperature, top-k and top-p', () => {
    const logits = f32([1, 3, 2]);
    expect(Array.from(processLogits(logits, [], { ...GREEDY, temperature: 0.1, topK: 1, topP: 0.1 }))).toEqual([
      1, 3, 2,
    ]);
  });
  it('processing order: penalty, temperature, top-k, top-p (as _get_logits_processor)', () => {
    const logits = f32([4, 2, 1, 0]);
    const s = processLogits(logits, [0], { doSample: true, repetitionPenalty: 2, temperature: 2, topK: 3, topP: 1 });
    // penalty: [2,2,1,0]; temperature: [1,1,0.5,0]; top-3: drops the 0.
    expect(Array.from(s)).toEqual([1, 1, 0.5, NEG]);
    expect(Array.from(logits)).toEqual([4, 2, 1, 0]); // input untouched
  });
});

describe('choice', () => {
  it('argmax returns the first maximum', () => {
    expect(argmax([1, 3, 3, 2])).toBe(1);
    expect(argmax(f32([NEG, NEG, 0]))).toBe(2);
  });
  it('drawFrom is the inverse CDF and skips zero-probability tokens', () => {
    const p = Float64Array.from([0.2, 0, 0.5, 0.3]);
    expect(drawFrom(p, 0)).toBe(0);
    expect(drawFrom(p, 0.1999)).toBe(0);
    expect(drawFrom(p, 0.2)).toBe(2);
    expect(drawFrom(p, 0.6999)).toBe(2);
    expect(drawFrom(p, 0.7)).toBe(3);
    expect(drawFrom(p, 0.9999999999999999)).toBe(3);
  });
  it('softmax handles −∞ and refuses an all −∞ row', () => {
    const p = softmax(f32([0, NEG, 0]));
    expect(Array.from(p)).toEqual([0.5, 0, 0.5]);
    expect(() => softmax(f32([NEG, NEG]))).toThrow(SamplingError);
  });
  it('NaN logits and invalid options are errors naming the option', () => {
    expect(() => sampleToken(f32([0, NaN]), [], GREEDY, Math.random)).toThrow(/NaN/);
    expect(() => sampleToken(f32([0, 1]), [], { ...SAMPLE, temperature: 0 }, Math.random)).toThrow(/temperature/);
    expect(() => sampleToken(f32([0, 1]), [], { ...SAMPLE, topP: 0 }, Math.random)).toThrow(/top_p/);
    expect(() => sampleToken(f32([0, 1]), [], { ...SAMPLE, topK: -1 }, Math.random)).toThrow(/top_k/);
    expect(() => sampleToken(f32([0, 1]), [], { ...GREEDY, repetitionPenalty: 0 }, Math.random)).toThrow(
      /repetition_penalty/,
    );
    // greedy accepts a temperature of 0 (transformers ignores it without sampling)
    expect(sampleToken(f32([0, 1]), [], { ...GREEDY, temperature: 0 }, Math.random)).toBe(1);
  });
  it('sampling frequencies follow the warped distribution (seeded, 40k draws)', () => {
    const logits = f32([2, 1, 0.5, -1, 0.2, 3]);
    const o: SamplingOptions = { doSample: true, temperature: 0.7, topK: 4, topP: 0.9, repetitionPenalty: 1 };
    const p = softmax(processLogits(logits, [], o));
    const rng = seededRng(1234);
    const counts = new Array(6).fill(0);
    const n = 40_000;
    for (let i = 0; i < n; i++) counts[sampleToken(logits, [], o, rng)]++;
    for (let i = 0; i < 6; i++) {
      if (p[i] === 0) expect(counts[i]).toBe(0);
      else expect(Math.abs(counts[i] / n - p[i])).toBeLessThan(4 * Math.sqrt((p[i] * (1 - p[i])) / n) + 1e-3);
    }
    expect(p.filter((x) => x > 0).length).toBeLessThan(4); // top-p removed something beyond top-k
  });
});

describe('seededRng', () => {
  it('is reproducible, in [0, 1), and uniform enough', () => {
    const a = seededRng(7);
    const b = seededRng(7);
    const c = seededRng(8);
    const xs = Array.from({ length: 20_000 }, () => a());
    expect(xs.slice(0, 5)).toEqual(Array.from({ length: 5 }, () => b()));
    expect(c()).not.toBe(xs[0]);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01);
    const buckets = new Array(10).fill(0);
    for (const x of xs) buckets[Math.floor(x * 10)]++;
    for (const k of buckets) expect(Math.abs(k - 2000)).toBeLessThan(200);
  });
});

describe('properties', () => {
  const logitsArb = fc
    .array(fc.float({ min: -20, max: 20, noNaN: true }), { minLength: 1, maxLength: 64 })
    .map((a) => Float32Array.from(a));
  it('top-p keeps a most-probable set with mass ≥ p, minimal up to ties', () => {
    fc.assert(
      fc.property(logitsArb, fc.double({ min: 0.01, max: 0.999, noNaN: true }), (logits, p) => {
        const s = Float32Array.from(logits);
        applyTopP(s, p);
        const probs = softmax(logits);
        let kept = 0;
        let minKept = Infinity;
        let maxDropped = -Infinity;
        for (let i = 0; i < s.length; i++) {
          if (s[i] !== NEG) {
            kept += probs[i];
            minKept = Math.min(minKept, probs[i]);
          } else maxDropped = Math.max(maxDropped, probs[i]);
        }
        expect(minKept).not.toBe(Infinity);
        expect(maxDropped).toBeLessThanOrEqual(minKept + 1e-12); // only the least probable go
        // kept mass beats p up to f32-free rounding; dropping the smallest kept token would not
        expect(kept).toBeGreaterThan(p - 1e-9);
      }),
      { numRuns: 500 },
    );
  });
  it('the sampled token is always one the warpers kept', () => {
    fc.assert(
      fc.property(
        logitsArb,
        fc.integer({ min: 0, max: 10 }),
        fc.double({ min: 0.05, max: 1, noNaN: true }),
        fc.integer(),
        (logits, k, p, seed) => {
          const o: SamplingOptions = { doSample: true, temperature: 0.8, topK: k, topP: p, repetitionPenalty: 1.2 };
          const s = processLogits(logits, [0], o);
          const id = sampleToken(logits, [0], o, seededRng(seed));
          expect(s[id]).not.toBe(NEG);
          if (k > 0)
            expect(Array.from(s).filter((x) => x !== NEG).length).toBeGreaterThanOrEqual(
              Math.min(k, logits.length) > 0 ? 1 : 0,
            );
        },
      ),
      { numRuns: 500 },
    );
  });
});

// A deterministic fake model: the next token is (last + 1) mod V, strongly preferred.
function fakeModel(V: number) {
  const calls: number[][] = [];
  let last = -1;
  const step: LogitsStep = async (ids) => {
    calls.push(Array.from(ids));
    last = ids[ids.length - 1];
    const l = new Float32Array(V);
    l[(last + 1) % V] = 5;
    return l;
  };
  return { step, calls };
}

const dec = (o: Partial<DecodeOptions>): DecodeOptions => ({ ...GREEDY, maxNewTokens: 5, stopIds: [], ...o });

describe('decode loop', () => {
  it('prefills once, then feeds one token per step, and stops at max_new_tokens', async () => {
    const m = fakeModel(10);
    const r = await decodeAll(m.step, [3, 4], dec({ maxNewTokens: 3 }));
    expect(Array.from(r.tokens)).toEqual([5, 6, 7]);
    expect(r.reason).toBe('length');
    expect(m.calls).toEqual([[3, 4], [5], [6]]); // no wasted step after the last token
    expect(r.promptTokens).toBe(2);
  });
  it('ends at a stop token without yielding it', async () => {
    const m = fakeModel(10);
    const seen: number[] = [];
    const r = await decodeAll(m.step, [1], dec({ maxNewTokens: 10, stopIds: [4, 9], onToken: (id) => seen.push(id) }));
    expect(Array.from(r.tokens)).toEqual([2, 3]);
    expect(seen).toEqual([2, 3]);
    expect(r.reason).toBe('stop');
    expect(r.stopId).toBe(4);
  });
  it('streams through the async iterator and honours an AbortSignal', async () => {
    const m = fakeModel(100);
    const ac = new AbortController();
    const got: number[] = [];
    const it = decodeLoop(m.step, [0], dec({ maxNewTokens: 50, signal: ac.signal }));
    for (;;) {
      const r = await it.next();
      if (r.done) {
        expect(r.value.reason).toBe('abort');
        break;
      }
      got.push(r.value);
      if (got.length === 3) ac.abort();
    }
    expect(got).toEqual([1, 2, 3]);
    expect(m.calls.length).toBe(3);
    const pre = new AbortController();
    pre.abort();
    const r = await decodeAll(m.step, [0], dec({ signal: pre.signal }));
    expect(r.reason).toBe('abort');
    expect(r.tokens.length).toBe(0);
  });
  it('repetition penalty sees the prompt and the generated tokens', async () => {
    // Logits prefer token 1 then 2; penalising seen tokens moves the choice along.
    const step: LogitsStep = async () => f32([0, 3, 2.9, 2.8, 2.7]);
    const r = await decodeAll(step, [1], dec({ maxNewTokens: 3, repetitionPenalty: 1.2 }));
    expect(Array.from(r.tokens)).toEqual([2, 3, 4]);
  });
  it('sampling with a seed replays exactly', async () => {
    const step: LogitsStep = async () => f32([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]);
    const o = dec({ ...SAMPLE, maxNewTokens: 20, seed: 99 });
    const a = await decodeAll(step, [0], o);
    const b = await decodeAll(step, [0], o);
    const c = await decodeAll(step, [0], { ...o, seed: 100 });
    expect(Array.from(a.tokens)).toEqual(Array.from(b.tokens));
    expect(Array.from(a.tokens)).not.toEqual(Array.from(c.tokens));
  });
  it('rejects an empty prompt and max_new_tokens < 1', async () => {
    const m = fakeModel(4);
    await expect(decodeAll(m.step, [], dec({}))).rejects.toThrow(GenerateError);
    await expect(decodeAll(m.step, [1], dec({ maxNewTokens: 0 }))).rejects.toThrow(/max_new_tokens/);
  });
});

describe('TextStreamer', () => {
  it('holds back a split multi-byte character and emits only new text', () => {
    // token 0 = "a", 1 = first half of "é" (decodes to U+FFFD alone), 2 = second half
    const decode = (ids: number[]) => {
      let s = '';
      for (let i = 0; i < ids.length; i++) {
        if (ids[i] === 0) s += 'a';
        else if (ids[i] === 1) s += ids[i + 1] === 2 ? (i++, 'é') : '\uFFFD';
      }
      return s;
    };
    const t = new TextStreamer(decode);
    expect(t.push(0)).toBe('a');
    expect(t.push(1)).toBe('');
    expect(t.push(2)).toBe('é');
    expect(t.push(0)).toBe('a');
    expect(t.flush()).toBe('');
    const u = new TextStreamer(decode);
    u.push(1);
    expect(u.flush()).toBe('\uFFFD');
  });
});

describe('PyTorch reference (transformers logits processors in torch, tests/reference/gen_export.py)', () => {
  it('processLogits equals the torch warpers on every fixture case', async () => {
    const { loadFixture } = await import('../reference/fixtures.ts');
    const fx = await loadFixture('sample_warpers');
    const V = fx.meta.vocab as number;
    const logits = fx.f32('logits');
    const warped = fx.f32('warped');
    const history = fx.t.history.data as Int32Array;
    const H = fx.t.history.shape[1];
    (
      fx.meta.cases as {
        do_sample: boolean;
        temperature: number;
        top_k: number;
        top_p: number;
        repetition_penalty: number;
      }[]
    ).forEach((c, i) => {
      const o: SamplingOptions = {
        doSample: c.do_sample,
        temperature: c.temperature,
        topK: c.top_k,
        topP: c.top_p,
        repetitionPenalty: c.repetition_penalty,
      };
      const got = processLogits(logits.subarray(i * V, (i + 1) * V), history.subarray(i * H, (i + 1) * H), o);
      const want = warped.subarray(i * V, (i + 1) * V);
      for (let j = 0; j < V; j++) {
        if (want[j] === NEG) expect(got[j], `case ${i} token ${j} kept`).toBe(NEG);
        else
          expect(Math.abs(got[j] - want[j]), `case ${i} token ${j}`).toBeLessThanOrEqual(
            1e-6 * Math.max(1, Math.abs(want[j])),
          );
      }
    });
  });
});

function randnLogits(n: number, seed: number, scale: number): Float32Array {
  const r = seededRng(seed);
  return Float32Array.from(
    { length: n },
    () => scale * Math.sqrt(-2 * Math.log(Math.max(r(), 1e-12))) * Math.cos(2 * Math.PI * r()),
  );
}

describe('top-p with ties and large vocabularies', () => {
  // The definition, written plainly: stable ascending index sort, cumulative softmax, drop while ≤ 1 − p.
  function naiveTopP(scores: Float32Array, p: number): Float32Array {
    const out = Float32Array.from(scores);
    const idx = Array.from(scores.keys())
      .filter((i) => scores[i] !== NEG)
      .sort((a, b) => scores[a] - scores[b] || a - b);
    if (!idx.length) return out;
    const max = scores[idx[idx.length - 1]];
    const e = idx.map((i) => Math.exp(scores[i] - max));
    const sum = e.reduce((a, b) => a + b, 0);
    let cum = 0;
    for (let j = 0; j < idx.length - 1; j++) {
      cum += e[j] / sum;
      if (cum <= 1 - p) out[idx[j]] = NEG;
      else break;
    }
    return out;
  }
  it('equals the plain definition, ties included (integer logits)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.integer({ min: -3, max: 3 }), fc.constant(-Infinity)), { minLength: 1, maxLength: 40 }),
        fc.double({ min: 0.01, max: 0.99, noNaN: true }),
        (xs, p) => {
          const s = Float32Array.from(xs);
          const got = Float32Array.from(s);
          applyTopP(got, p);
          expect(Array.from(got)).toEqual(Array.from(naiveTopP(s, p)));
        },
      ),
      { numRuns: 1000 },
    );
  });
  it('the bucketed path for large vocabularies equals the plain definition', () => {
    for (const [seed, scale, p] of [
      [1, 1, 0.7],
      [2, 3, 0.9],
      [3, 6, 0.3],
      [4, 0.2, 0.95],
      [5, 10, 0.5],
    ] as const) {
      const s = randnLogits(20_000, seed, scale);
      for (let i = 0; i < s.length; i += 97) s[i] = NEG; // some already removed
      const got = Float32Array.from(s);
      applyTopP(got, p);
      const want = naiveTopP(s, p);
      let diff = 0;
      for (let i = 0; i < s.length; i++) if ((got[i] === NEG) !== (want[i] === NEG)) diff++;
      expect(diff, `seed ${seed} p ${p}`).toBe(0);
      expect(got.some((x) => x === NEG) && got.some((x) => x !== NEG)).toBe(true);
    }
  });
  it('top-k by heap equals top-k by sorting, ties included', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: -5, max: 5 }), { minLength: 1, maxLength: 300 }),
        fc.integer({ min: 1, max: 320 }),
        (xs, k) => {
          const s = Float32Array.from(xs);
          const kk = Math.min(k, s.length);
          expect(kthLargest(s, kk)).toBe(Float32Array.from(s).sort()[s.length - kk]);
        },
      ),
      { numRuns: 500 },
    );
  });
  it('a 152k vocabulary is filtered quickly', () => {
    const logits = Float32Array.from({ length: 151936 }, (_, i) => Math.sin(i * 12.9898) * 8);
    const t0 = performance.now();
    for (let k = 0; k < 5; k++)
      processLogits(logits, [], { doSample: true, temperature: 0.95, topK: 0, topP: 0.7, repetitionPenalty: 1.1 });
    const ms = (performance.now() - t0) / 5;
    const s = processLogits(logits, [], {
      doSample: true,
      temperature: 0.95,
      topK: 0,
      topP: 0.7,
      repetitionPenalty: 1.1,
    });
    const n = s.filter((x) => x !== NEG).length;
    expect(n).toBeGreaterThan(0);
    expect(n).toBeLessThan(151936);
    expect(ms).toBeGreaterThan(0); // timing is printed, never asserted
    console.log(`processLogits V=151936 top_p=0.7: ${ms.toFixed(1)} ms/token, ${n} tokens kept`);
  });
});
