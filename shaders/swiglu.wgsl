// Gated MLP activations y = act(g)·u (transformers LlamaMLP / Gemma3MLP: act_fn(gate_proj(x))·up_proj(x)).
// act = 0: SwiGLU of Llama/Qwen, silu(g) = g·σ(g).
//   Backward: dGate = dy·u·σ(g)·(1 + g·(1 − σ(g)))  (torch's silu_backward form), dUp = dy·silu(g).
// act = 1: GeGLU of Gemma, hidden_activation "gelu_pytorch_tanh" = torch's gelu(approximate="tanh"):
//   gelu(g) = ½·g·(1 + tanh(β·(g + κ·g³))), β = √(2/π), κ = 0.044715.
//   Backward (torch's GeluBackward, tanh branch): gelu'(g) = ½·(1 + t) + ½·g·(1 − t²)·β·(1 + 3κ·g²),
//   t = tanh(β·(g + κ·g³)); both computed through σ(2·β·(g + κ·g³)) = ½·(1 + t) (see geluHalf).
// Layouts: separate gate/up [rows, width] (forward, backward) or one fused [rows, 2·width]
// buffer with gate in columns [0, width) and up in [width, 2·width) (forwardFused,
// backwardFused). One thread per output element.
const WG: u32 = 256u;

struct Params {
  rows: u32, width: u32, act: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

fn elementIndex(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * WG + lid;
}

fn sigmoid(g: f32) -> f32 {
  return 1.0 / (1.0 + exp(-g));
}

const GELU_BETA: f32 = 0.7978845608028654; // √(2/π)
const GELU_KAPPA: f32 = 0.044715;

// GeLU through ½·(1 + tanh(z)) = σ(2z): no cancellation where tanh(z) ≈ −1, and no tanh (some
// backends build it from exp, which overflows); exp(−2z) → ∞ gives σ = 0 cleanly.
fn geluHalf(g: f32) -> f32 {
  return sigmoid(2.0 * GELU_BETA * (g + GELU_KAPPA * g * g * g));
}

fn act(g: f32) -> f32 {
  if (p.act == 1u) { return g * geluHalf(g); }
  return g * sigmoid(g);
}

// d act(g) / dg; for GeLU ½·(1 − tanh²(z)) = 2·s·(1 − s) with s = σ(2z).
fn actGrad(g: f32) -> f32 {
  if (p.act == 1u) {
    let s = geluHalf(g);
    return s + 2.0 * g * s * (1.0 - s) * GELU_BETA * (1.0 + 3.0 * GELU_KAPPA * g * g);
  }
  let s = sigmoid(g);
  return s * (1.0 + g * (1.0 - s));
}

// ---- separate gate / up ----------------------------------------------------------------
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let i = elementIndex(wg, nwg, lid);
  if (i >= p.rows * p.width) { return; }
  y[i] = act(gate[i]) * up[i];
}

@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dGate: array<f32>;
@group(0) @binding(5) var<storage, read_write> dUp: array<f32>;

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let i = elementIndex(wg, nwg, lid);
  if (i >= p.rows * p.width) { return; }
  let g = gate[i];
  let d = dy[i];
  dGate[i] = d * up[i] * actGrad(g);
  dUp[i] = d * act(g);
}

// ---- fused [rows, 2·width] ---------------------------------------------------------------
@group(0) @binding(1) var<storage, read> gateUp: array<f32>;
@group(0) @binding(2) var<storage, read_write> yFused: array<f32>;

fn fusedIndex(i: u32) -> u32 {
  return (i / p.width) * 2u * p.width + i % p.width;
}

@compute @workgroup_size(WG)
fn forwardFused(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  let i = elementIndex(wg, nwg, lid);
  if (i >= p.rows * p.width) { return; }
  let j = fusedIndex(i);
  yFused[i] = act(gateUp[j]) * gateUp[j + p.width];
}

@group(0) @binding(2) var<storage, read> dyFused: array<f32>;
@group(0) @binding(3) var<storage, read_write> dGateUp: array<f32>;

@compute @workgroup_size(WG)
fn backwardFused(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let i = elementIndex(wg, nwg, lid);
  if (i >= p.rows * p.width) { return; }
  let j = fusedIndex(i);
  let g = gateUp[j];
  let u = gateUp[j + p.width];
  let d = dyFused[i];
  dGateUp[j] = d * u * actGrad(g);
  dGateUp[j + p.width] = d * act(g);
}
