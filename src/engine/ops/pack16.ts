// bf16 storage of f32 activations kept for the backward (gradient checkpoints); see shaders/pack16.wgsl.
import { Params, type Recorder } from '../gpu/recorder.ts';
import { describe, type Tensor } from '../gpu/tensor.ts';
import { checkInteger, checkOperands, foldGrid, launch } from './kernel.ts';

const WG = 256;

export interface Pack16Args {
  /** f32 source [≥ n]. */
  src: Tensor;
  /** bf16 destination [≥ n] (two values per word). */
  dst: Tensor;
  n: number;
}

export interface Unpack16Args {
  /** bf16 source [≥ n]. */
  src: Tensor;
  /** f32 destination [≥ n]. */
  dst: Tensor;
  n: number;
}

/** Records dst = bf16(src), rounded to nearest even (torch's cast). */
export async function packBf16(rec: Recorder, a: Pack16Args): Promise<void> {
  const what = `pack16.pack ${describe(a.src)} → ${describe(a.dst)} n=${a.n}`;
  checkInteger(what, 'n', a.n);
  checkOperands(what, [
    { name: 'src', tensor: a.src, dtype: 'f32', min: a.n },
    { name: 'dst', tensor: a.dst, dtype: 'bf16', min: a.n, write: true },
  ]);
  await launch(rec, {
    shader: 'pack16',
    entry: 'pack',
    what,
    params: new Params(4).u32(a.n).u32(0).u32(0).u32(0),
    bindings: [a.src, a.dst],
    grid: foldGrid(rec, Math.ceil(Math.ceil(a.n / 2) / WG)),
  });
}

/** Records dst = f32(src) (exact). */
export async function unpackBf16(rec: Recorder, a: Unpack16Args): Promise<void> {
  const what = `pack16.unpack ${describe(a.src)} → ${describe(a.dst)} n=${a.n}`;
  checkInteger(what, 'n', a.n);
  checkOperands(what, [
    { name: 'src', tensor: a.src, dtype: 'bf16', min: a.n },
    { name: 'dst', tensor: a.dst, dtype: 'f32', min: a.n, write: true },
  ]);
  await launch(rec, {
    shader: 'pack16',
    entry: 'unpack',
    what,
    params: new Params(4).u32(a.n).u32(0).u32(0).u32(0),
    bindings: [a.src, a.dst],
    grid: foldGrid(rec, Math.ceil(a.n / WG)),
  });
}
