// Property tests: whatever bytes the reader is given, it either parses them into a consistent
// view or throws a SafetensorsError — never a TypeError/RangeError/other exception.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { bytesSource } from '../../../src/io/byte-source.ts';
import {
  SAFETENSORS_DTYPES,
  DTYPE_BYTES,
  SafetensorsError,
  SafetensorsFile,
  parseHeader,
  type SafetensorsDtype,
} from '../../../src/io/safetensors.ts';
import { serializeSafetensors, type TensorToWrite } from '../../../src/io/safetensors-writer.ts';
import { rawFile } from './st-helpers.ts';

const dtypeArb = fc.constantFrom(...SAFETENSORS_DTYPES);
const tensorArb: fc.Arbitrary<TensorToWrite> = fc
  .record({
    name: fc.string({ minLength: 0, maxLength: 12 }).filter((s) => s !== '__metadata__'),
    dtype: dtypeArb,
    shape: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 3 }),
    seed: fc.integer({ min: 0, max: 255 }),
  })
  .map(({ name, dtype, shape, seed }) => {
    const n = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype as SafetensorsDtype];
    return { name, dtype, shape, data: new Uint8Array(n).map((_, i) => (seed + i * 31) & 255) };
  });
const validArb = fc
  .record({
    tensors: fc.uniqueArray(tensorArb, { maxLength: 6, selector: (t) => t.name }),
    metadata: fc.option(
      fc.dictionary(
        fc.string({ maxLength: 6 }).filter((k) => k !== '__proto__'),
        fc.string({ maxLength: 6 }),
        { maxKeys: 3 },
      ),
      { nil: undefined },
    ),
  })
  .chain(({ tensors, metadata }) => fc.constant({ tensors, metadata }));

/** Opens the bytes and reads every tensor; returns 'ok' or the SafetensorsError kind. Any other exception escapes. */
async function exercise(bytes: Uint8Array): Promise<string> {
  try {
    const f = await SafetensorsFile.open(bytesSource(bytes, 'fuzz.safetensors'));
    // A successful parse must describe the file exactly: contiguous cover of the data block.
    let cursor = f.header.dataStart;
    for (const t of f.header.tensors) {
      if (t.fileOffset !== cursor) throw new Error(`parse accepted a hole/overlap at ${t.name}`);
      cursor += t.byteLength;
      const r = await f.readTensor(t.name);
      if (r.bytes.byteLength !== t.byteLength) throw new Error('short read accepted');
    }
    if (cursor !== bytes.byteLength) throw new Error('parse accepted trailing bytes');
    return 'ok';
  } catch (e) {
    if (e instanceof SafetensorsError) {
      if (!e.message.startsWith('fuzz.safetensors: ')) throw new Error(`message does not name the file: ${e.message}`);
      return e.kind;
    }
    throw e;
  }
}

const mutation = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('append' as const), extra: fc.uint8Array({ minLength: 1, maxLength: 9 }) }),
  fc.record({
    kind: fc.constant('headerChar' as const),
    at: fc.nat(),
    ch: fc.constantFrom('{', '}', '[', ']', '"', ',', ':', '0', '9', '-', ' ', 'e', '.', '\\'),
  }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer T> ? T : never;

function mutate(bytes: Uint8Array, muts: Mutation[]): Uint8Array {
  let b = bytes.slice();
  for (const m of muts) {
    if (b.byteLength === 0) break;
    switch (m.kind) {
      case 'flip':
        b[m.at % b.byteLength] ^= 1 << m.bit;
        break;
      case 'set':
        b[m.at % b.byteLength] = m.value;
        break;
      case 'truncate':
        b = b.slice(0, m.at % b.byteLength);
        break;
      case 'append': {
        const c = new Uint8Array(b.byteLength + m.extra.byteLength);
        c.set(b);
        c.set(m.extra, b.byteLength);
        b = c;
        break;
      }
      case 'headerChar': {
        // Mutate inside the JSON so the JSON parser and the field checks get exercised.
        const n = b.byteLength >= 8 ? Number(new DataView(b.buffer, b.byteOffset).getBigUint64(0, true)) : 0;
        const span = Math.min(n, b.byteLength - 8);
        if (span > 0) b[8 + (m.at % span)] = m.ch.charCodeAt(0);
        break;
      }
    }
  }
  return b;
}

const anyJson = fc.jsonValue({ maxDepth: 3 });
const entryArb = fc.oneof(
  anyJson,
  fc.record({
    dtype: fc.oneof(dtypeArb, fc.string({ maxLength: 5 }), anyJson),
    shape: fc.oneof(
      fc.array(
        fc.oneof(fc.integer({ min: -2, max: 6 }), fc.double(), fc.constant(2 ** 53), fc.string({ maxLength: 2 })),
        { maxLength: 4 },
      ),
      anyJson,
    ),
    data_offsets: fc.oneof(
      fc.tuple(fc.integer({ min: -3, max: 200 }), fc.integer({ min: -3, max: 200 })),
      fc.array(fc.integer({ min: 0, max: 64 }), { maxLength: 3 }),
      anyJson,
    ),
  }),
);

describe('safetensors fuzz', () => {
  it('valid files written by our writer always parse back identically', async () => {
    await fc.assert(
      fc.asyncProperty(validArb, async ({ tensors, metadata }) => {
        const bytes = await serializeSafetensors(tensors, metadata);
        const f = await SafetensorsFile.open(bytesSource(bytes, 'fuzz.safetensors'));
        // Zero-size tensors share an offset, so only the set of names is fixed, not their order.
        expect([...f.names()].sort()).toEqual(tensors.map((t) => t.name).sort());
        for (const t of tensors) {
          const r = await f.readTensor(t.name);
          expect(r.dtype).toBe(t.dtype);
          expect(r.shape).toEqual(t.shape);
          expect(r.bytes).toEqual(t.data);
        }
        expect(f.metadata ?? undefined).toEqual(metadata);
      }),
      { numRuns: 1500, seed: 20240601 },
    );
  });

  it('mutated valid files: only SafetensorsError escapes (≥ 10⁴ cases)', async () => {
    const kinds = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(
        validArb,
        fc.array(mutation, { minLength: 1, maxLength: 3 }),
        async ({ tensors, metadata }, muts) => {
          const bytes = mutate(await serializeSafetensors(tensors, metadata), muts);
          const k = await exercise(bytes);
          kinds.set(k, (kinds.get(k) ?? 0) + 1);
        },
      ),
      { numRuns: 12000, seed: 7 },
    );
    // The corpus must actually reach the interesting checks, not just fail at the prefix.
    for (const k of ['ok', 'truncated', 'header-json', 'offsets', 'size-mismatch'])
      expect(kinds.get(k) ?? 0, `kind ${k}`).toBeGreaterThan(0);
  });

  it('random headers (JSON-ish entries, offsets, shapes, dtypes): only SafetensorsError escapes', async () => {
    const kinds = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(
        fc.dictionary(fc.oneof(fc.string({ maxLength: 4 }), fc.constant('__metadata__')), entryArb, { maxKeys: 4 }),
        fc.integer({ min: 0, max: 96 }),
        async (header, dataLen) => {
          const k = await exercise(rawFile(header, dataLen));
          kinds.set(k, (kinds.get(k) ?? 0) + 1);
        },
      ),
      { numRuns: 4000, seed: 11 },
    );
    for (const k of ['ok', 'header-entry', 'dtype', 'shape', 'offsets', 'metadata'])
      expect(kinds.get(k) ?? 0, `kind ${k}`).toBeGreaterThan(0);
  });

  it('arbitrary bytes as a header: only SafetensorsError escapes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.integer({ min: 0, max: 256 }), (json, extra) => {
        try {
          parseHeader(json, 'fuzz.safetensors', 8 + json.byteLength + extra);
        } catch (e) {
          if (!(e instanceof SafetensorsError)) throw e;
        }
      }),
      { numRuns: 3000, seed: 3 },
    );
  });
});
