// SwiGLU of the Llama/Qwen2 MLP (transformers modeling_llama.py LlamaMLP: act_fn(gate)·up with
// act_fn = SiLU): y = silu(g)·u, silu(g) = g·σ(g).
// Backward: dGate = dy·u·σ(g)·(1 + g·(1 − σ(g)))  (torch's silu_backward form), dUp = dy·silu(g).
// Layouts: separate gate/up [rows, width] (forward, backward) or one fused [rows, 2·width]
// buffer with gate in columns [0, width) and up in [width, 2·width) (forwardFused,
// backwardFused). One thread per output element.
const WG: u32 = 256u;

struct Params {
  rows: u32, width: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

fn elementIndex(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * WG + lid;
}

fn sigmoid(g: f32) -> f32 {
  return 1.0 / (1.0 + exp(-g));
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
  let g = gate[i];
  y[i] = g * sigmoid(g) * up[i];
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
  let s = sigmoid(g);
  let d = dy[i];
  dGate[i] = d * up[i] * (s * (1.0 + g * (1.0 - s)));
  dUp[i] = d * (g * s);
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
  let g = gateUp[j];
  yFused[i] = g * sigmoid(g) * gateUp[j + p.width];
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
  let s = sigmoid(g);
  let d = dyFused[i];
  dGateUp[j] = d * u * (s * (1.0 + g * (1.0 - s)));
  dGateUp[j + p.width] = d * (g * s);
}
