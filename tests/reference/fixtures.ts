// Loads fixtures written by tests/reference/generate.py (works in Node and in the browser).
const files = import.meta.glob('./fixtures/*.json', { import: 'default' }) as Record<string, () => Promise<RawFixture>>;

interface RawTensor {
  dtype: 'f32' | 'i32' | 'u8' | 'bf16' | 'f16';
  shape: number[];
  b64: string;
}
interface RawFixture {
  source: string;
  torch: string;
  meta: Record<string, unknown>;
  tensors: Record<string, RawTensor>;
}

export interface FixtureTensor {
  dtype: RawTensor['dtype'];
  shape: number[];
  /** f32 → Float32Array, i32 → Int32Array, u8 → Uint8Array, bf16/f16 → raw Uint16Array bits. */
  data: Float32Array | Int32Array | Uint8Array | Uint16Array;
}

export interface Fixture {
  source: string;
  meta: Record<string, any>;
  t: Record<string, FixtureTensor>;
  f32(name: string): Float32Array;
}

function decode(b64: string): ArrayBuffer {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out.buffer;
}

export async function loadFixture(name: string): Promise<Fixture> {
  const load = files[`./fixtures/${name}.json`];
  if (!load) throw new Error(`fixture ${name} missing: run npm run reference`);
  const raw = await load();
  const t: Record<string, FixtureTensor> = {};
  for (const [k, v] of Object.entries(raw.tensors)) {
    const buf = decode(v.b64);
    const data =
      v.dtype === 'f32'
        ? new Float32Array(buf)
        : v.dtype === 'i32'
          ? new Int32Array(buf)
          : v.dtype === 'u8'
            ? new Uint8Array(buf)
            : new Uint16Array(buf);
    t[k] = { dtype: v.dtype, shape: v.shape, data };
  }
  return {
    source: raw.source,
    meta: raw.meta,
    t,
    f32(n: string) {
      const x = t[n];
      if (!x || x.dtype !== 'f32') throw new Error(`fixture ${name}: ${n} is not an f32 tensor`);
      return x.data as Float32Array;
    },
  };
}
