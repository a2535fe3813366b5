// SwiGLU y = silu(gate)·up of the Llama/Qwen2 MLP, forward and backward; see shaders/swiglu.wgsl.
// `activation: 'gelu_tanh'` makes it Gemma's GeGLU, gelu_pytorch_tanh(gate)·up (modeling_gemma3.py
// Gemma3MLP with transformers' activations.py PytorchGELUTanh).
// Gate and up are either separate [rows, width] tensors or one fused [rows, 2·width] tensor
// (gate columns first), e.g. when gate_proj and up_proj run as one matmul.
import { Params, type Recorder } from '../gpu/recorder.ts';
import { describe, type Tensor } from '../gpu/tensor.ts';
import { check, checkInteger, checkOperands, foldGrid, launch, type Operand } from './kernel.ts';

const WG = 256;

/** The gate's activation: SiLU (Llama, Qwen, Mistral) or tanh-approximate GELU (Gemma). */
export type GateActivation = 'silu' | 'gelu_tanh';

const ACT_CODE: Record<GateActivation, number> = { silu: 0, gelu_tanh: 1 };

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
  /** Default 'silu'. */
  activation?: GateActivation;
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
  /** The forward's activation (default 'silu'). */
  activation?: GateActivation;
}

type Inputs = {
  gate?: Tensor;
  up?: Tensor;
  gateUp?: Tensor;
  rows: number;
  width: number;
  activation?: GateActivation;
};

function actCode(w: string, a: Inputs): number {
  const act = a.activation ?? 'silu';
  check(w, act in ACT_CODE, `activation must be silu or gelu_tanh, got ${String(act)}`);
  return ACT_CODE[act];
}

/** The gate/up operands (one fused or two separate), checked for shape and exclusivity. */
function inputs(w: string, a: Inputs): Operand[] {
  checkInteger(w, 'rows', a.rows, 0);
  checkInteger(w, 'width', a.width);
  const n = a.rows * a.width;
  if (a.gateUp) {
    check(w, !a.gate && !a.up, 'pass either gateUp or gate+up, not both');
    return [{ name: 'gateUp', tensor: a.gateUp, dtype: 'f32', min: 2 * n }];
  }
  check(w, !!(a.gate && a.up), 'needs gate and up (or a fused gateUp)');
  return [
    { name: 'gate', tensor: a.gate, dtype: 'f32', min: n },
    { name: 'up', tensor: a.up, dtype: 'f32', min: n },
  ];
}

function label(kernel: string, a: Inputs): string {
  const ins = a.gateUp
    ? `gateUp${describe(a.gateUp)}`
    : `gate${a.gate ? describe(a.gate) : '?'} up${a.up ? describe(a.up) : '?'}`;
  const act = a.activation && a.activation !== 'silu' ? ` ${a.activation}` : '';
  return `swiglu.${kernel}${act} ${ins} rows=${a.rows} width=${a.width}`;
}

/** The gradient operands matching the inputs: fused dGateUp or separate dGate, dUp. */
function gradients(w: string, a: SwigluBackwardArgs): Operand[] {
  const n = a.rows * a.width;
  if (a.gateUp) {
    check(w, !!a.dGateUp && !a.dGate && !a.dUp, 'a fused gateUp needs a fused dGateUp output (and no dGate/dUp)');
    return [{ name: 'dGateUp', tensor: a.dGateUp, dtype: 'f32', min: 2 * n, write: true }];
  }
  check(w, !!a.dGate && !!a.dUp && !a.dGateUp, 'separate gate/up need dGate and dUp outputs');
  return [
    { name: 'dGate', tensor: a.dGate, dtype: 'f32', min: n, write: true },
    { name: 'dUp', tensor: a.dUp, dtype: 'f32', min: n, write: true },
  ];
}

function tensors(ops: Operand[]): Tensor[] {
  return ops.map((op) => op.tensor!);
}

/** Records y = act(gate)·up. */
export async function swigluForward(rec: Recorder, a: SwigluForwardArgs): Promise<void> {
  const entry = a.gateUp ? 'forwardFused' : 'forward';
  const w = `${label(entry, a)} → y${describe(a.y)}`;
  const ins = inputs(w, a);
  checkOperands(w, [...ins, { name: 'y', tensor: a.y, dtype: 'f32', min: a.rows * a.width, write: true }]);
  const params = new Params(4).u32(a.rows).u32(a.width).u32(actCode(w, a)).u32(0);
  await launch(rec, {
    shader: 'swiglu',
    entry,
    what: w,
    params,
    bindings: [...tensors(ins), a.y],
    grid: foldGrid(rec, Math.ceil((a.rows * a.width) / WG)),
  });
}

/** Records dGate, dUp (or dGateUp) from dy; both gradients are overwritten. */
export async function swigluBackward(rec: Recorder, a: SwigluBackwardArgs): Promise<void> {
  const entry = a.gateUp ? 'backwardFused' : 'backward';
  const w = label(entry, a);
  const ins = inputs(w, a);
  const n = a.rows * a.width;
  const dy: Operand = { name: 'dy', tensor: a.dy, dtype: 'f32', min: n };
  const outs = gradients(w, a);
  checkOperands(w, [...ins, dy, ...outs]);
  const params = new Params(4).u32(a.rows).u32(a.width).u32(actCode(w, a)).u32(0);
  await launch(rec, {
    shader: 'swiglu',
    entry,
    what: w,
    params,
    bindings: [...tensors(ins), a.dy, ...tensors(outs)],
    grid: foldGrid(rec, Math.ceil(n / WG)),
  });
}
