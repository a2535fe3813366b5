// A minimal GGUF v3 reader written from the format description (llama.cpp ggml/include/gguf.h,
// gguf-py constants.py), independent of the writer: header, typed key/values, tensor infos.
export interface Parsed {
  version: number;
  kv: Map<string, { type: number; value: unknown }>;
  tensors: { name: string; dims: number[]; type: number; offset: number }[];
  dataStart: number;
}

/** A minimal GGUF reader written from the format description (not from the writer). */
export function parseGguf(b: Uint8Array): Parsed {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let p = 0;
  const u32 = () => ((p += 4), v.getUint32(p - 4, true));
  const u64 = () => ((p += 8), Number(v.getBigUint64(p - 8, true)));
  const str = () => {
    const n = u64();
    p += n;
    return new TextDecoder().decode(b.subarray(p - n, p));
  };
  const scalar = (t: number): unknown => {
    switch (t) {
      case 0:
        return ((p += 1), v.getUint8(p - 1));
      case 1:
        return ((p += 1), v.getInt8(p - 1));
      case 2:
        return ((p += 2), v.getUint16(p - 2, true));
      case 3:
        return ((p += 2), v.getInt16(p - 2, true));
      case 4:
        return u32();
      case 5:
        return ((p += 4), v.getInt32(p - 4, true));
      case 6:
        return ((p += 4), v.getFloat32(p - 4, true));
      case 7:
        return ((p += 1), v.getUint8(p - 1) !== 0);
      case 8:
        return str();
      case 10:
        return ((p += 8), v.getBigUint64(p - 8, true));
      case 11:
        return ((p += 8), v.getBigInt64(p - 8, true));
      case 12:
        return ((p += 8), v.getFloat64(p - 8, true));
      default:
        throw new Error(`bad type ${t}`);
    }
  };
  if (new TextDecoder().decode(b.subarray(0, 4)) !== 'GGUF') throw new Error('not a GGUF file');
  p = 4;
  const version = u32();
  const nt = u64();
  const nkv = u64();
  const kv = new Map<string, { type: number; value: unknown }>();
  for (let i = 0; i < nkv; i++) {
    const key = str();
    const type = u32();
    if (type === 9) {
      const of = u32();
      const n = u64();
      const values: unknown[] = [];
      for (let j = 0; j < n; j++) values.push(scalar(of));
      kv.set(key, { type, value: { of, values } });
    } else kv.set(key, { type, value: scalar(type) });
  }
  const tensors: Parsed['tensors'] = [];
  for (let i = 0; i < nt; i++) {
    const name = str();
    const nd = u32();
    const dims: number[] = [];
    for (let j = 0; j < nd; j++) dims.push(u64());
    tensors.push({ name, dims, type: u32(), offset: u64() });
  }
  const align = (kv.get('general.alignment')?.value as number | undefined) ?? 32;
  return { version, kv, tensors, dataStart: Math.ceil(p / align) * align };
}
