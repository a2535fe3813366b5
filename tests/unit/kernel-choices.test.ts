import { describe, expect, it } from 'vitest';
import { KernelChoices, parseForcedKernels } from '../../src/engine/gpu/kernel-choices.ts';
import { matmulShapeClass } from '../../src/engine/ops/matmul.ts';

const VARIANTS = ['tiled64', 'tiled128', 'register8x8'] as const;

describe('kernel choices', () => {
  it('serves the fallback until a class is tuned, then the tuned variant', () => {
    const k = new KernelChoices();
    expect(k.pick('matmul', 'c1', VARIANTS, 'tiled64')).toBe('tiled64');
    k.set('matmul', 'c1', 'register8x8');
    expect(k.pick('matmul', 'c1', VARIANTS, 'tiled64')).toBe('register8x8');
    expect(k.pick('matmul', 'c2', VARIANTS, 'tiled64')).toBe('tiled64');
    expect(k.toRecord()).toEqual({ 'matmul:c1': 'register8x8' });
  });

  it('restores stored choices but ignores a stored variant that no longer exists', () => {
    const k = new KernelChoices();
    k.restore({ 'matmul:c1': 'tiled128', 'matmul:c2': 'gone' });
    expect(k.pick('matmul', 'c1', VARIANTS, 'tiled64')).toBe('tiled128');
    expect(k.pick('matmul', 'c2', VARIANTS, 'tiled64')).toBe('tiled64');
  });

  it('a forced variant wins over tuned ones; an unknown one is an error naming the choices', () => {
    const k = new KernelChoices(parseForcedKernels('matmul=tiled128'));
    k.set('matmul', 'c1', 'register8x8');
    expect(k.pick('matmul', 'c1', VARIANTS, 'tiled64')).toBe('tiled128');
    expect(k.isForced('matmul')).toBe(true);
    const bad = new KernelChoices(parseForcedKernels('matmul=fast'));
    expect(() => bad.pick('matmul', 'c1', VARIANTS, 'tiled64')).toThrow(
      /"fast" is not one of tiled64, tiled128, register8x8/,
    );
  });

  it('parses TABTUNE_KERNELS and rejects malformed entries', () => {
    expect(parseForcedKernels(undefined)).toEqual({});
    expect(parseForcedKernels(' matmul=register8x8 , rmsnorm=plain ')).toEqual({
      matmul: 'register8x8',
      rmsnorm: 'plain',
    });
    expect(() => parseForcedKernels('matmul')).toThrow(/"matmul" is not family=variant/);
  });

  it('shape classes bucket each extent by its power of two and keep format and transposes apart', () => {
    const base = { M: 128, N: 896, K: 896, transB: true, weight: 'bf16' };
    expect(matmulShapeClass(base)).toBe('bf16/NT/m7n10k10');
    expect(matmulShapeClass({ ...base, N: 1000 })).toBe(matmulShapeClass(base));
    expect(matmulShapeClass({ ...base, N: 1025 })).not.toBe(matmulShapeClass(base));
    expect(matmulShapeClass({ ...base, weight: 'nf4' })).not.toBe(matmulShapeClass(base));
    expect(matmulShapeClass({ ...base, transB: false })).not.toBe(matmulShapeClass(base));
  });
});
