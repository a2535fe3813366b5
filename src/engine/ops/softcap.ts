// Final-logit soft-capping (Gemma 2's final_logit_softcapping, modeling_gemma2.py
// Gemma2ForCausalLM.forward): x ← cap·tanh(x / cap) in place; see shaders/softcap.wgsl. Training
// passes the same cap to crossEntropy, which multiplies its dLogits by 1 − (c / cap)².
import { Params, type Recorder } from '../gpu/recorder.ts';
import { describe, type Tensor } from '../gpu/tensor.ts';
import { check, checkInteger, checkOperands, threadGrid, launch } from './kernel.ts';

const WG = 256;

export interface SoftcapArgs {
  /** f32 [≥ n], capped in place. */
  x: Tensor;
  n: number;
  /** The cap (> 0). */
  cap: number;
}

/** Records x ← cap·tanh(x / cap) over the first n elements. */
export async function softcapForward(rec: Recorder, a: SoftcapArgs): Promise<void> {
  const what = `softcap.forward x${describe(a.x)} n=${a.n} cap=${a.cap}`;
  checkInteger(what, 'n', a.n, 0);
  check(what, Number.isFinite(a.cap) && a.cap > 0, `cap must be a finite number > 0, got ${a.cap}`);
  checkOperands(what, [{ name: 'x', tensor: a.x, dtype: 'f32', min: a.n, write: true }]);
  if (a.n === 0) return;
  await launch(rec, {
    shader: 'softcap',
    entry: 'forward',
    what,
    params: new Params(4).u32(a.n).f32(a.cap).u32(0).u32(0),
    bindings: [a.x],
    grid: threadGrid(rec, a.n, WG),
  });
}
