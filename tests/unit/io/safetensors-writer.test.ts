import { describe, expect, it } from 'vitest';
import { bytesSource, type ByteSource } from '../../../src/io/byte-source.ts';
import { SafetensorsError, SafetensorsFile, typedData, type TypedTensorData } from '../../../src/io/safetensors.ts';
import { ShardedSafetensors, openCheckpoint, parseIndex } from '../../../src/io/safetensors-index.ts';
import {
  buildHeader,
  indexJson,
  planShards,
  serializeSafetensors,
  writeShardedSafetensors,
  type ByteSink,
  type TensorToWrite,
} from '../../../src/io/safetensors-writer.ts';
import { concat, f32Bytes, rawFile } from './st-helpers.ts';

function nums(x: TypedTensorData): number[] {
  return Array.from(x as ArrayLike<number>);
}

function f32Tensor(name: string, shape: number[], seed: number): TensorToWrite {
  const n = shape.reduce((a, b) => a * b, 1);
  return { name, dtype: 'F32', shape, data: f32Bytes(Array.from({ length: n }, (_, i) => seed + i / 8)) };
}

/** An in-memory folder: sinks collect chunks; sources read them back. */
function memoryFolder() {
  const files = new Map<string, Uint8Array>();
  const chunkCounts = new Map<string, number>();
  const openSink = (name: string): ByteSink => {
    const parts: Uint8Array[] = [];
    return {
      write(c) {
        parts.push(c.slice());
      },
      close() {
        files.set(name, concat(...parts));
        chunkCounts.set(name, parts.length);
      },
    };
  };
  const openFile = async (name: string): Promise<ByteSource | null> =>
    files.has(name) ? bytesSource(files.get(name)!, name) : null;
  return { files, chunkCounts, openSink, openFile };
}

describe('safetensors writer', () => {
  it('pads the header with spaces to a multiple of 8 and round-trips', async () => {
    const tensors: TensorToWrite[] = [
      f32Tensor('b.weight', [3, 2], 1),
      { name: 'a', dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 3]) },
    ];
    const bytes = await serializeSafetensors(tensors, { format: 'pt' });
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    expect(text).toMatch(
      /^\{"__metadata__":\{"format":"pt"\},"b\.weight":\{"dtype":"F32","shape":\[3,2\],"data_offsets":\[0,24\]\}/,
    );
    expect(text.trimEnd().endsWith('}')).toBe(true);
    expect(/^ *$/.test(text.slice(text.trimEnd().length))).toBe(true);
    const f = await SafetensorsFile.open(bytesSource(bytes));
    expect(f.names()).toEqual(['b.weight', 'a']);
    expect(nums(typedData(await f.readTensor('b.weight')))).toEqual([1, 1.125, 1.25, 1.375, 1.5, 1.625]);
    expect(Array.from((await f.readTensor('a')).bytes)).toEqual([1, 2, 3]);
    expect(f.metadata).toEqual({ format: 'pt' });
  });

  it('keeps integer-like names in the given order', () => {
    const plan = buildHeader('x', [
      { name: 'b', dtype: 'U8', shape: [1] },
      { name: '10', dtype: 'U8', shape: [2] },
      { name: '2', dtype: 'U8', shape: [] },
    ]);
    const text = new TextDecoder().decode(plan.prefix.subarray(8)).trimEnd();
    expect(Object.keys(JSON.parse(text))).toEqual(['2', '10', 'b']); // JSON.parse reorders, so check the raw text:
    expect(text.indexOf('"b"')).toBeLessThan(text.indexOf('"10"'));
    expect(text.indexOf('"10"')).toBeLessThan(text.indexOf('"2"'));
    expect(plan.offsets).toEqual([
      [0, 1],
      [1, 3],
      [3, 4],
    ]);
  });

  it('streams lazily produced data (sync, async, async-iterable) without joining it', async () => {
    let produced = 0;
    async function* pieces() {
      for (let i = 0; i < 4; i++) {
        produced++;
        yield f32Bytes([i, i + 0.5]);
      }
    }
    const folder = memoryFolder();
    await writeShardedSafetensors(
      [
        { name: 'x', dtype: 'F32', shape: [4, 2], data: () => pieces() },
        { name: 'y', dtype: 'F32', shape: [1], data: async () => f32Bytes([9]) },
      ],
      folder.openSink,
    );
    expect(produced).toBe(4);
    expect(folder.chunkCounts.get('model.safetensors')).toBe(1 + 4 + 1);
    const f = await SafetensorsFile.open(bytesSource(folder.files.get('model.safetensors')!));
    expect(nums(typedData(await f.readTensor('x')))).toEqual([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5]);
    expect(folder.files.has('model.safetensors.index.json')).toBe(false);
  });

  it('rejects producers that give the wrong number of bytes, duplicate names and bad shapes', async () => {
    await expect(
      serializeSafetensors([{ name: 'w', dtype: 'F32', shape: [2], data: new Uint8Array(7) }]),
    ).rejects.toThrow(/tensor "w": data source produced 7 bytes but F32 \[2\] needs 8/);
    await expect(
      serializeSafetensors([{ name: 'w', dtype: 'F32', shape: [1], data: new Uint8Array(8) }]),
    ).rejects.toThrow(/more than the 4 bytes/);
    await expect(serializeSafetensors([f32Tensor('w', [1], 0), f32Tensor('w', [1], 0)])).rejects.toThrow(
      SafetensorsError,
    );
    await expect(
      serializeSafetensors([{ name: 'w', dtype: 'F32', shape: [-1], data: new Uint8Array(0) }]),
    ).rejects.toThrow(/tensor "w"/);
    await expect(serializeSafetensors([f32Tensor('__metadata__', [1], 0)])).rejects.toThrow(/reserved/);
  });
});

describe('shards and index', () => {
  const tensors = [
    f32Tensor('a', [4], 0),
    f32Tensor('b', [6], 1),
    f32Tensor('c', [2], 2),
    f32Tensor('huge', [20], 3),
    f32Tensor('d', [1], 4),
  ];

  it('splits in order like huggingface_hub: overflow starts a new shard; oversized tensors stand alone', () => {
    const plan = planShards(tensors, 36);
    expect(plan.shards.map((s) => [s.file, s.tensors.map((t) => t.name)])).toEqual([
      ['model-00001-of-00004.safetensors', ['a']],
      ['model-00002-of-00004.safetensors', ['b', 'c']],
      ['model-00003-of-00004.safetensors', ['huge']],
      ['model-00004-of-00004.safetensors', ['d']],
    ]);
    expect(plan.index!.metadata.total_size).toBe(4 * (4 + 6 + 2 + 20 + 1));
    expect(planShards(tensors).index).toBeNull();
    expect(planShards(tensors).shards[0].file).toBe('model.safetensors');
  });

  it('writes shards + index and reads them back as one store', async () => {
    const folder = memoryFolder();
    const progress: number[] = [];
    const res = await writeShardedSafetensors(tensors, folder.openSink, {
      maxShardBytes: 36,
      onProgress: (w) => progress.push(w),
    });
    expect(res.indexFile).toBe('model.safetensors.index.json');
    expect(progress.at(-1)).toBe(
      [...folder.files.entries()].filter(([k]) => k.endsWith('.safetensors')).reduce((n, [, v]) => n + v.byteLength, 0),
    );
    const indexText = new TextDecoder().decode(folder.files.get('model.safetensors.index.json')!);
    expect(indexText).toBe(
      '{\n  "metadata": {\n    "total_size": 132\n  },\n  "weight_map": {\n' +
        '    "a": "model-00001-of-00004.safetensors",\n    "b": "model-00002-of-00004.safetensors",\n' +
        '    "c": "model-00002-of-00004.safetensors",\n    "d": "model-00004-of-00004.safetensors",\n' +
        '    "huge": "model-00003-of-00004.safetensors"\n  }\n}\n',
    );
    const store = await openCheckpoint(folder.openFile);
    expect(store.names()).toEqual(['a', 'b', 'c', 'huge', 'd']);
    expect(store.info('c').shard).toBe('model-00002-of-00004.safetensors');
    expect(store.warnings).toEqual([]);
    expect(store.metadata).toEqual({ format: 'pt' });
    const got: Record<string, number[]> = {};
    for await (const t of store.tensors()) got[t.name] = Array.from(typedData(t) as Float32Array);
    expect(got.d).toEqual([4]);
    expect(got.huge.length).toBe(20);
    expect(got.b[5]).toBe(1 + 5 / 8);
  });

  it('opens a single-file checkpoint through the same interface', async () => {
    const folder = memoryFolder();
    await writeShardedSafetensors(tensors, folder.openSink);
    const store = await openCheckpoint(folder.openFile);
    expect(store.names().length).toBe(5);
    expect(store.info('a').shard).toBe('model.safetensors');
    await expect(openCheckpoint(async () => null)).rejects.toThrow(
      /neither model\.safetensors nor model\.safetensors\.index\.json/,
    );
  });

  async function shardedFolder() {
    const folder = memoryFolder();
    await writeShardedSafetensors(tensors, folder.openSink, { maxShardBytes: 36 });
    const index = JSON.parse(new TextDecoder().decode(folder.files.get('model.safetensors.index.json')!));
    return { folder, index };
  }

  it('names missing shard files', async () => {
    const { folder, index } = await shardedFolder();
    folder.files.delete('model-00002-of-00004.safetensors');
    await expect(
      ShardedSafetensors.open(JSON.stringify(index), 'model.safetensors.index.json', folder.openFile),
    ).rejects.toThrow(
      /model\.safetensors\.index\.json: missing shard file "model-00002-of-00004\.safetensors" \(2 tensors, e\.g\. "b"\)/,
    );
  });

  it('names tensors listed for a shard that lacks them', async () => {
    const { folder, index } = await shardedFolder();
    index.weight_map.ghost = 'model-00001-of-00004.safetensors';
    await expect(ShardedSafetensors.open(JSON.stringify(index), 'idx.json', folder.openFile)).rejects.toThrow(
      /idx\.json: tensor "ghost": listed for shard "model-00001-of-00004\.safetensors" but that file has no such tensor/,
    );
    const { folder: f2, index: i2 } = await shardedFolder();
    i2.weight_map.c = 'model-00001-of-00004.safetensors';
    await expect(ShardedSafetensors.open(JSON.stringify(i2), 'idx.json', f2.openFile)).rejects.toThrow(
      /tensor "c": listed for shard "model-00001-of-00004\.safetensors" but stored in "model-00002-of-00004\.safetensors"/,
    );
  });

  it('rejects tensors stored in two shards', async () => {
    const { folder, index } = await shardedFolder();
    folder.files.set(
      'model-00004-of-00004.safetensors',
      await serializeSafetensors([f32Tensor('d', [1], 4), f32Tensor('a', [4], 0)]),
    );
    await expect(ShardedSafetensors.open(JSON.stringify(index), 'idx.json', folder.openFile)).rejects.toThrow(
      /tensor "a": tensor is stored in two shards, "model-00001-of-00004\.safetensors" and "model-00004-of-00004\.safetensors"/,
    );
  });

  it('warns about unlisted tensors and a wrong total_size', async () => {
    const { folder, index } = await shardedFolder();
    folder.files.set(
      'model-00004-of-00004.safetensors',
      await serializeSafetensors([f32Tensor('d', [1], 4), f32Tensor('extra', [1], 0)]),
    );
    index.metadata.total_size = 1;
    const store = await ShardedSafetensors.open(JSON.stringify(index), 'idx.json', folder.openFile);
    expect(store.warnings).toEqual([
      'model-00004-of-00004.safetensors: tensor "extra" is not listed in idx.json; ignored',
      'idx.json: metadata.total_size is 1 but the listed tensors hold 132 bytes',
    ]);
    expect(store.has('extra')).toBe(false);
  });

  it('validates the index JSON itself', () => {
    expect(() => parseIndex('{', 'i.json')).toThrow(/i\.json: not valid JSON/);
    expect(() => parseIndex('[]', 'i.json')).toThrow(/must be a JSON object/);
    expect(() => parseIndex('{"weight_map": []}', 'i.json')).toThrow(/"weight_map" must be an object/);
    expect(() => parseIndex('{"weight_map": {"a": 3}}', 'i.json')).toThrow(
      /i\.json: tensor "a": weight_map value must be a shard file name/,
    );
    expect(() => parseIndex('{"weight_map": {"a": "../x.safetensors"}}', 'i.json')).toThrow(
      /inside the checkpoint folder/,
    );
    expect(() => parseIndex('{"metadata": {"total_size": "9"}, "weight_map": {"a": "x"}}', 'i.json')).toThrow(
      /total_size must be a non-negative integer/,
    );
    expect(() => parseIndex('{"weight_map": {}}', 'i.json')).toThrow(/lists no tensors/);
    expect(
      parseIndex('{"metadata": {"total_size": 8, "format": "pt"}, "weight_map": {"a": "x", "b": "y", "c": "x"}}')
        .shards,
    ).toEqual(['x', 'y']);
  });

  it('index text parses back to the same map', () => {
    const plan = planShards(tensors, 36);
    const idx = parseIndex(indexJson(plan.index!));
    expect(Object.fromEntries(idx.weightMap)).toEqual(plan.index!.weight_map);
    expect(idx.totalSize).toBe(132);
  });

  it('a file with a broken shard header is reported with the shard name', async () => {
    const { folder, index } = await shardedFolder();
    folder.files.set(
      'model-00003-of-00004.safetensors',
      rawFile({ huge: { dtype: 'F32', shape: [20], data_offsets: [0, 80] } }, 40),
    );
    await expect(ShardedSafetensors.open(JSON.stringify(index), 'idx.json', folder.openFile)).rejects.toThrow(
      /^model-00003-of-00004\.safetensors: tensor "huge": .*run past the end/,
    );
  });
});
