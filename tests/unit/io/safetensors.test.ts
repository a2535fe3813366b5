import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { blobSource, bytesSource, type ByteSource } from '../../../src/io/byte-source.ts';
import { nodeFileSource } from '../../../src/io/node-fs.ts';
import {
  SafetensorsError,
  SafetensorsFile,
  readHeader,
  typedData,
  type TypedTensorData,
} from '../../../src/io/safetensors.ts';
import { loadFixture } from '../../reference/fixtures.ts';
import { concat, f32Bytes, rawFile } from './st-helpers.ts';

function nums(x: TypedTensorData): number[] {
  return Array.from(x as ArrayLike<number>);
}

function b64(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'base64'));
}

async function fails(bytes: Uint8Array, name = 'bad.safetensors'): Promise<SafetensorsError> {
  try {
    await SafetensorsFile.open(bytesSource(bytes, name));
  } catch (e) {
    expect(e).toBeInstanceOf(SafetensorsError);
    return e as SafetensorsError;
  }
  throw new Error('expected a SafetensorsError');
}

/** Counts the bytes a reader asks for. */
function counting(src: ByteSource): ByteSource & { requested: number } {
  const c = {
    name: src.name,
    size: src.size,
    requested: 0,
    async read(offset: number, length: number) {
      c.requested += length;
      return src.read(offset, length);
    },
  };
  return c;
}

describe('safetensors reader on a file written by torch-side code (gen_safetensors.py)', () => {
  it('reads every dtype, shape and value', async () => {
    const fx = await loadFixture('safetensors_torch');
    const bytes = b64(fx.meta.file_b64);
    const f = await SafetensorsFile.open(bytesSource(bytes, 'torch.safetensors'));
    expect(f.metadata).toEqual({ format: 'pt', note: 'written by gen_safetensors.py' });
    expect(f.names()).toEqual(fx.meta.order);
    for (const name of fx.meta.order as string[]) {
      const info = f.info(name);
      expect(info.dtype).toBe(fx.meta.dtypes[name]);
      expect(info.shape).toEqual(fx.meta.shapes[name]);
      const t = await f.readTensor(name);
      expect(Buffer.from(t.bytes).toString('hex')).toBe(fx.meta.raw_hex[name]);
    }
    expect(Array.from(typedData(await f.readTensor('model.embed_tokens.weight')) as Float32Array)).toEqual(
      Array.from(fx.f32('f32')),
    );
    expect(Array.from(typedData(await f.readTensor('layers.0.bf16')) as Uint16Array)).toEqual(
      Array.from(fx.t.bf16.data),
    );
    expect(Array.from(typedData(await f.readTensor('layers.0.f16')) as Uint16Array)).toEqual(Array.from(fx.t.f16.data));
    expect(Array.from(typedData(await f.readTensor('i32')) as Int32Array)).toEqual(Array.from(fx.t.i32.data));
    expect(Array.from(typedData(await f.readTensor('i64')) as BigInt64Array).map(String)).toEqual(fx.meta.i64);
    expect(nums(typedData(await f.readTensor('u8')))).toEqual(Array.from(fx.t.u8.data));
    expect(nums(typedData(await f.readTensor('bool')))).toEqual([1, 0, 1]);
    expect((await f.readTensor('scalar')).shape).toEqual([]);
    expect((await f.readTensor('empty')).bytes.byteLength).toBe(0);
    expect(Array.from(typedData(await f.readTensor('10')) as Uint16Array)).toEqual([1, 65535]);
  });

  it('reads only the 8-byte prefix, the header and the requested tensor', async () => {
    const fx = await loadFixture('safetensors_torch');
    const bytes = b64(fx.meta.file_b64);
    const src = counting(bytesSource(bytes, 'x.safetensors'));
    const f = await SafetensorsFile.open(src);
    expect(src.requested).toBe(8 + f.header.headerLength);
    await f.readTensor('f64');
    expect(src.requested).toBe(8 + f.header.headerLength + 32);
  });

  it('streams a tensor in element-aligned chunks equal to the whole read', async () => {
    const values = Array.from({ length: 1001 }, (_, i) => i * 0.5 - 3);
    const bytes = rawFile({ w: { dtype: 'F32', shape: [7, 143], data_offsets: [0, 4004] } }, f32Bytes(values));
    const f = await SafetensorsFile.open(bytesSource(bytes));
    const chunks: Uint8Array[] = [];
    for await (const c of f.readTensorChunks('w', 1000)) chunks.push(c.slice());
    expect(chunks.length).toBe(5);
    expect(chunks.every((c) => c.byteLength % 4 === 0)).toBe(true);
    expect(concat(...chunks)).toEqual((await f.readTensor('w')).bytes);
  });

  it('works on a Blob and on a Node file handle', async () => {
    const bytes = rawFile(
      { __metadata__: { a: 'b' }, x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } },
      f32Bytes([1.5, -2]),
    );
    const fromBlob = await SafetensorsFile.open(
      blobSource(new Blob([bytes as Uint8Array<ArrayBuffer>]), 'blob.safetensors'),
    );
    expect(nums(typedData(await fromBlob.readTensor('x')))).toEqual([1.5, -2]);
    const dir = mkdtempSync(join(tmpdir(), 'st-'));
    const path = join(dir, 'x.safetensors');
    writeFileSync(path, bytes);
    const fromFile = await SafetensorsFile.open(await nodeFileSource(path));
    expect(nums(typedData(await fromFile.readTensor('x')))).toEqual([1.5, -2]);
    expect(fromFile.metadata).toEqual({ a: 'b' });
    await fromFile.close();
  });

  it('copies unaligned data before making a typed view', async () => {
    // Header not padded: data starts at an odd offset.
    const bytes = rawFile('{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', f32Bytes([3, 4]), { pad: false });
    const f = await SafetensorsFile.open(bytesSource(bytes));
    expect(nums(typedData(await f.readTensor('x')))).toEqual([3, 4]);
  });

  it('says which tensor is unknown', async () => {
    const f = await SafetensorsFile.open(
      bytesSource(rawFile({ a: { dtype: 'U8', shape: [1], data_offsets: [0, 1] } }, 1), 'm.safetensors'),
    );
    await expect(f.readTensor('b')).rejects.toThrow(/m\.safetensors: tensor "b": no such tensor/);
  });
});

describe('safetensors validation: every bad file is a SafetensorsError naming file and tensor', () => {
  const ok = { w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] } };

  it('truncated prefix', async () => {
    const e = await fails(new Uint8Array(5));
    expect(e.kind).toBe('truncated');
    expect(e.message).toMatch(/^bad\.safetensors: file is 5 bytes/);
  });
  it('header length beyond the file', async () => {
    const e = await fails(rawFile(ok, 16, { lengthOverride: 4096n }));
    expect(e.kind).toBe('truncated');
    expect(e.message).toContain('runs past the end');
  });
  it('header length over 100 MB', async () => {
    const e = await fails(rawFile(ok, 16, { lengthOverride: 100_000_001n }));
    expect(e.kind).toBe('header-too-large');
    const huge = await fails(rawFile(ok, 16, { lengthOverride: 0xffff_ffff_ffff_ffffn }));
    expect(huge.kind).toBe('header-too-large');
  });
  it('truncated data', async () => {
    const full = rawFile(ok, 16);
    const e = await fails(full.subarray(0, full.byteLength - 3));
    expect(e.kind).toBe('truncated');
    expect(e.tensor).toBe('w');
    expect(e.message).toMatch(/tensor "w": data_offsets \[0, 16\] run past the end of the data block \(13 bytes/);
  });
  it('bad UTF-8', async () => {
    const bytes = rawFile('{"w":1}', 0);
    bytes[9] = 0xff;
    expect((await fails(bytes)).kind).toBe('header-encoding');
  });
  it('not JSON / not an object / not starting with {', async () => {
    expect((await fails(rawFile('{"w": ', 0))).kind).toBe('header-json');
    expect((await fails(rawFile('[1,2]', 0))).message).toContain('must start with "{"');
    expect((await fails(rawFile(' {}', 0))).kind).toBe('header-json');
  });
  it('non-object entries', async () => {
    const e = await fails(rawFile({ w: [1, 2] }, 0));
    expect(e.kind).toBe('header-entry');
    expect(e.message).toContain('tensor "w": entry must be an object');
  });
  it('unknown dtype', async () => {
    const e = await fails(rawFile({ w: { dtype: 'F128', shape: [1], data_offsets: [0, 16] } }, 16));
    expect(e.kind).toBe('dtype');
    expect(e.message).toContain('unknown dtype the string "F128"; supported: F64, F32');
  });
  it('shapes must be non-negative integers', async () => {
    for (const shape of [[-1], [1.5], ['2'], 3, [2 ** 60, 2 ** 60]]) {
      const e = await fails(rawFile({ w: { dtype: 'U8', shape, data_offsets: [0, 0] } }, 0));
      expect(e.kind).toBe('shape');
      expect(e.tensor).toBe('w');
    }
  });
  it('size must equal numel × dtype size', async () => {
    const e = await fails(rawFile({ w: { dtype: 'BF16', shape: [3, 3], data_offsets: [0, 16] } }, 16));
    expect(e.kind).toBe('size-mismatch');
    expect(e.message).toContain('needs 9 × 2 = 18');
  });
  it('bad offsets: malformed, reversed, overlapping, holes, not starting at 0, trailing bytes', async () => {
    const t = (b: number, e: number, shape = [1]) => ({ dtype: 'F32', shape, data_offsets: [b, e] });
    expect((await fails(rawFile({ w: { dtype: 'F32', shape: [1], data_offsets: [0] } }, 4))).kind).toBe('offsets');
    expect((await fails(rawFile({ w: { dtype: 'F32', shape: [1], data_offsets: [-4, 0] } }, 4))).kind).toBe('offsets');
    expect((await fails(rawFile({ w: { dtype: 'F32', shape: [0], data_offsets: [4, 0] } }, 4))).kind).toBe('offsets');
    const overlap = await fails(rawFile({ a: t(0, 8, [2]), b: t(4, 8) }, 8));
    expect(overlap.message).toMatch(/tensor "b": data_offsets \[4, 8\] overlap tensor "a" \[0, 8\]/);
    const hole = await fails(rawFile({ a: t(0, 4), b: t(8, 12) }, 12));
    expect(hole.message).toMatch(/tensor "b": .* hole of 4 bytes after tensor "a"/);
    expect(hole.offset).toBeGreaterThan(8);
    const start = await fails(rawFile({ a: t(4, 8) }, 8));
    expect(start.message).toContain('offsets must start at 0');
    const trailing = await fails(rawFile({ a: t(0, 4) }, 9));
    expect(trailing.message).toContain('5 trailing bytes');
  });
  it('__metadata__ must map strings to strings', async () => {
    const e = await fails(rawFile({ __metadata__: { step: 3 }, ...ok }, 16));
    expect(e.kind).toBe('metadata');
    expect(e.message).toContain('__metadata__["step"] must be a string');
    expect((await fails(rawFile({ __metadata__: ['x'], ...ok }, 16))).kind).toBe('metadata');
  });
  it('accepts empty files, zero-size tensors and null metadata', async () => {
    const f = await SafetensorsFile.open(
      bytesSource(
        rawFile(
          {
            __metadata__: null,
            z: { dtype: 'F32', shape: [0, 3], data_offsets: [0, 0] },
            y: { dtype: 'I8', shape: [], data_offsets: [0, 1] },
          },
          1,
        ),
      ),
    );
    expect(f.names()).toEqual(['z', 'y']);
    expect(f.metadata).toBeNull();
    const empty = await readHeader(bytesSource(rawFile({}, 0)));
    expect(empty.tensors).toEqual([]);
  });
  it('reports a file that shrank after opening', async () => {
    const bytes = rawFile(ok, 16);
    let size = bytes.byteLength;
    const src: ByteSource = {
      name: 'shrinking',
      get size() {
        return size;
      },
      read: async (o, l) => bytes.subarray(o, Math.min(size, o + l)),
    };
    const f = await SafetensorsFile.open(src);
    size -= 4;
    await expect(f.readTensor('w')).rejects.toThrow(/shrinking: tensor "w": could read only 12 of 16 bytes/);
  });
});

describe('Python reads what the TS writer writes', () => {
  it('gen_safetensors.py --check agrees on names, dtypes, shapes and values', async () => {
    const { writeShardedSafetensors } = await import('../../../src/io/safetensors-writer.ts');
    const { nodeFileSink } = await import('../../../src/io/node-fs.ts');
    const { execFileSync } = await import('node:child_process');
    const dir = mkdtempSync(join(tmpdir(), 'stpy-'));
    const w = new Float32Array(6 * 5).map((_, i) => Math.sin(i) * 3);
    const half = new Uint16Array([0x3c00, 0xc000, 0x3555]); // f16 1, -2, 0.333
    const bf = new Uint16Array([0x3f80, 0xc040]); // bf16 1, -3
    const ids = new BigInt64Array([-5n, 2n ** 40n]);
    const written = await writeShardedSafetensors(
      [
        { name: 'model.layers.0.mlp.up_proj.weight', dtype: 'F32', shape: [6, 5], data: new Uint8Array(w.buffer) },
        { name: 'h', dtype: 'F16', shape: [3], data: () => new Uint8Array(half.buffer) },
        { name: 'b', dtype: 'BF16', shape: [1, 2], data: async () => new Uint8Array(bf.buffer) },
        { name: '7', dtype: 'I64', shape: [2], data: new Uint8Array(ids.buffer) },
        { name: 'e', dtype: 'F32', shape: [0], data: new Uint8Array(0) },
      ],
      (f) => nodeFileSink(join(dir, f)),
      { maxShardBytes: 100 },
    );
    expect(written.files).toEqual([
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
      'model.safetensors.index.json',
    ]);
    const shardPaths = written.files.slice(0, 2).map((f) => join(dir, f));
    const out = JSON.parse(
      execFileSync('/usr/bin/python3', ['tests/reference/gen_safetensors.py', '--check', ...shardPaths], {
        encoding: 'utf8',
      }),
    );
    const a = out[shardPaths[0]];
    expect(a.metadata).toEqual({ format: 'pt' });
    expect(a.header_length % 8).toBe(0);
    const up = a.tensors['model.layers.0.mlp.up_proj.weight'];
    expect(up.shape).toEqual([6, 5]);
    expect(up.sum).toBeCloseTo(
      Array.from(w).reduce((s, x) => s + x, 0),
      5,
    );
    const bTensors = out[shardPaths[1]].tensors;
    expect(bTensors.h.sum).toBeCloseTo(1 - 2 + 0.333251953125, 9);
    expect(bTensors.b.sum).toBe(-2);
    expect(bTensors['7'].sum).toBe(-5 + 2 ** 40);
    expect(bTensors.e.shape).toEqual([0]);
    const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'));
    expect(index.metadata.total_size).toBe(120 + 6 + 4 + 16);
    expect(index.weight_map).toEqual({
      '7': 'model-00002-of-00002.safetensors',
      b: 'model-00002-of-00002.safetensors',
      e: 'model-00002-of-00002.safetensors',
      h: 'model-00002-of-00002.safetensors',
      'model.layers.0.mlp.up_proj.weight': 'model-00001-of-00002.safetensors',
    });
  });
});
