// SwiGLU y = silu(gate)·up of the Llama/Qwen2 MLP, forward and backward; see shaders/swiglu.wgsl.
// Gate and up are either separate [rows, width] tensors or one fused [rows, 2·width] tensor
// (gate columns first), e.g. when gate_proj and up_proj run as one matmul.
import { GpuError } from '../gpu/errors.ts';
import { Params, type Recorder } from '../gpu/recorder.ts';
import { describe, type Tensor } from '../gpu/tensor.ts';
import { checkDistinct, checkDType, checkFits, checkPositiveInt, foldGrid } from './k1_shared.ts';

const WG = 256;

export interface SwigluForwardArgs {
  /** Separate gate and up [rows, width] f32 … */
  gate?: Tensor;
  up?: Tensor;
  /** … or one fused [rows, 2·width] f32 (gate in columns [0, width)). */
  gateUp?: Tensor;
  /** Output [rows, width] f32. */
  y: Tensor;
  rows: number;
  width: number;
}

export interface SwigluBackwardArgs {
  gate?: Tensor;
  up?: Tensor;
  gateUp?: Tensor;
  /** dL/dy [rows, width] f32. */
  dy: Tensor;
  /** Separate outputs dL/dgate, dL/dup [rows, width] (with gate/up) … */
  dGate?: Tensor;
  dUp?: Tensor;
  /** … or fused dL/d(gateUp) [rows, 2·width] (with gateUp). */
  dGateUp?: Tensor;
  rows: number;
  width: number;
}

function inputs(w: string, a: { gate?: Tensor; up?: Tensor; gateUp?: Tensor; rows: number; width: number }): Tensor[] {
  checkPositiveInt(w, 'rows', a.rows, 0);
  checkPositiveInt(w, 'width', a.width);
  const n = a.rows * a.width;
  if (a.gateUp) {
    if (a.gate || a.up) throw new GpuError('validation', w, 'pass either gateUp or gate+up, not both');
    checkDType(w, 'gateUp', a.gateUp, 'f32');
    checkFits(w, 'gateUp', a.gateUp, 2 * n);
    return [a.gateUp];
  }
  if (!a.gate || !a.up) throw new GpuError('validation', w, 'needs gate and up (or a fused gateUp)');
  checkDType(w, 'gate', a.gate, 'f32');
  checkDType(w, 'up', a.up, 'f32');
  checkFits(w, 'gate', a.gate, n);
  checkFits(w, 'up', a.up, n);
  return [a.gate, a.up];
}

function label(kernel: string, a: { gate?: Tensor; up?: Tensor; gateUp?: Tensor; rows: number; width: number }): string {
  const ins = a.gateUp ? `gateUp${describe(a.gateUp)}` : `gate${a.gate ? describe(a.gate) : '?'} up${a.up ? describe(a.up) : '?'}`;
  return `swiglu.${kernel} ${ins} rows=${a.rows} width=${a.width}`;
}

/** Records y = silu(gate)·up. */
export async function swigluForward(rec: Recorder, a: SwigluForwardArgs): Promise<void> {
  const fused = !!a.gateUp;
  const w = `${label(fused ? 'forwardFused' : 'forward', a)} → y${describe(a.y)}`;
  const ins = inputs(w, a);
  checkDType(w, 'y', a.y, 'f32');
  checkFits(w, 'y', a.y, a.rows * a.width);
  checkDistinct(w, [['y', a.y], ...ins.map((t, i) => [`input ${i}`, t] as [string, Tensor])]);
  const pipeline = await rec.gpu.pipelines.get('swiglu', {}, fused ? 'forwardFused' : 'forward');
  const params = new Params(4).u32(a.rows).u32(a.width).u32(0).u32(0);
  rec.dispatch({ pipeline, what: w }, params.buffer, [...ins, a.y], foldGrid(rec, Math.ceil((a.rows * a.width) / WG)));
}

/** Records dGate, dUp (or dGateUp) from dy; both gradients are overwritten. */
export async function swigluBackward(rec: Recorder, a: SwigluBackwardArgs): Promise<void> {
  const fused = !!a.gateUp;
  const w = label(fused ? 'backwardFused' : 'backward', a);
  const ins = inputs(w, a);
  const n = a.rows * a.width;
  checkDType(w, 'dy', a.dy, 'f32');
  checkFits(w, 'dy', a.dy, n);
  let outs: Tensor[];
  if (fused) {
    if (!a.dGateUp || a.dGate || a.dUp) throw new GpuError('validation', w, 'a fused gateUp needs a fused dGateUp output (and no dGate/dUp)');
    checkDType(w, 'dGateUp', a.dGateUp, 'f32');
    checkFits(w, 'dGateUp', a.dGateUp, 2 * n);
    outs = [a.dGateUp];
  } else {
    if (!a.dGate || !a.dUp || a.dGateUp) throw new GpuError('validation', w, 'separate gate/up need dGate and dUp outputs');
    checkDType(w, 'dGate', a.dGate, 'f32');
    checkDType(w, 'dUp', a.dUp, 'f32');
    checkFits(w, 'dGate', a.dGate, n);
    checkFits(w, 'dUp', a.dUp, n);
    outs = [a.dGate, a.dUp];
  }
  checkDistinct(w, [['dy', a.dy], ...[...ins, ...outs].map((t, i) => [`operand ${i}`, t] as [string, Tensor])]);
  const pipeline = await rec.gpu.pipelines.get('swiglu', {}, fused ? 'backwardFused' : 'backward');
  const params = new Params(4).u32(a.rows).u32(a.width).u32(0).u32(0);
  rec.dispatch({ pipeline, what: w }, params.buffer, [...ins, a.dy, ...outs], foldGrid(rec, Math.ceil(n / WG)));
}
