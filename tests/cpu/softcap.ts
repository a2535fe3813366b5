/** CPU reference for shaders/softcap.wgsl in f64: cap·tanh(x / cap). */
export function softcapRef(x: ArrayLike<number>, cap: number): Float64Array {
  return Float64Array.from(x as ArrayLike<number>, (v) => cap * Math.tanh(v / cap));
}
