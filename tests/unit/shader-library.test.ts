import { describe, expect, it } from 'vitest';
import { resolveShader } from '../../src/engine/gpu/shader-library.ts';
import { sizeClass } from '../../src/engine/gpu/pool.ts';
import { MemoryLedger } from '../../src/engine/gpu/ledger.ts';
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from '../../src/engine/numeric/half.ts';

describe('shader library', () => {
  const sources = {
    main: '#include "util"\n#include "{{DECODE}}"\nconst N: u32 = {{N}};\nconst F: bool = {{F}};',
    'include/util': '#include "base"\nfn util() {}',
    'include/base': 'fn base() {}',
    'include/dense': 'fn decode() {}',
    kernel: 'fn kernel() {}',
  };
  it('expands includes once, placeholders in include names and in code', () => {
    const out = resolveShader(sources, 'main', { N: 64, F: true, DECODE: 'dense' });
    expect(out).toBe('fn base() {}\nfn util() {}\nfn decode() {}\nconst N: u32 = 64;\nconst F: bool = true;');
  });
  it('rejects missing, unused and unknown names', () => {
    expect(() => resolveShader(sources, 'main', { N: 1, DECODE: 'dense' })).toThrow(/\{\{F\}\} has no value/);
    expect(() => resolveShader(sources, 'main', { N: 1, F: false, DECODE: 'dense', X: 2 })).toThrow(/never used.*X/);
    expect(() => resolveShader(sources, 'main', { N: 1, F: false, DECODE: 'nope' })).toThrow(
      /"nope" not found \(included from main\)/,
    );
    // Includes come from shaders/include/ only, never from the kernel files beside it.
    expect(() => resolveShader(sources, 'main', { N: 1, F: false, DECODE: 'kernel' })).toThrow(
      /"kernel" not found \(included from main\)/,
    );
  });
});

describe('buffer pool size classes and ledger', () => {
  it('rounds small sizes to 256 B and large ones to 1/8 of their power of two', () => {
    expect(sizeClass(1)).toBe(256);
    expect(sizeClass(257)).toBe(512);
    expect(sizeClass(65536)).toBe(65536);
    expect(sizeClass(65537)).toBe(65536 + 8192);
    expect(sizeClass(1_000_000)).toBe(1_048_576);
    for (const n of [70_000, 3_333_333, 123_456_789]) {
      expect(sizeClass(n)).toBeGreaterThanOrEqual(n);
      expect(sizeClass(n) / n).toBeLessThanOrEqual(1.125);
    }
  });
  it('tracks current and peak bytes per category, pooled bytes separately', () => {
    const l = new MemoryLedger();
    l.take('weights', 1000, false);
    l.take('activations', 500, false);
    l.give('activations', 500, true);
    l.take('scratch', 500, true);
    l.give('scratch', 500, false);
    const r = l.report();
    expect(r.current).toMatchObject({ weights: 1000, activations: 0, scratch: 0 });
    expect(r.peak).toMatchObject({ weights: 1000, activations: 500, scratch: 500 });
    expect(r.pooledFree).toBe(0);
    expect(r.peakAllocated).toBe(1500);
  });
});

describe('16-bit conversions', () => {
  it('round to nearest even like torch', () => {
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie → even
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(bf16BitsToF32(0xc000)).toBe(-2);
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(1e6)).toBe(0x7c00);
    expect(f32ToF16Bits(2 ** -24)).toBe(1);
    expect(f16BitsToF32(f32ToF16Bits(0.1))).toBeCloseTo(0.0999755859375, 12);
    expect(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN)))).toBe(true);
  });
});
