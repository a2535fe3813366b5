import { describe, expect, test } from 'vitest';
import { readRecords, parseJsonBytes, type RawRecord } from '../../../src/data/index.ts';

const enc = new TextEncoder();

/** Feeds `text` as a stream of chunks of `size` bytes, so every parser path crosses chunk edges. */
async function* chunked(text: string, size: number): AsyncGenerator<Uint8Array> {
  const b = enc.encode(text);
  for (let i = 0; i < b.length; i += size) yield b.slice(i, i + size);
}

async function collect(src: Parameters<typeof readRecords>[0], opts: Parameters<typeof readRecords>[1] = {}) {
  const recs: RawRecord[] = [];
  const gen = readRecords(src, opts);
  for (;;) {
    const r = await gen.next();
    if (r.done) return { recs, summary: r.value };
    recs.push(r.value);
  }
}

describe('JSON array reader', () => {
  const text = '[\n  {"a": "x,]}"},\n  {"a": "é\\"[{"},\n  {"a": 3}\n]\n';
  test.each([1, 2, 3, 7, 1 << 20])('same rows at chunk size %i', async (size) => {
    const { recs, summary } = await collect(chunked(text, size), { fileName: 'f.json' });
    expect(summary.kind).toBe('json');
    expect(recs.map((r) => r.value)).toEqual([{ a: 'x,]}' }, { a: 'é"[{' }, { a: 3 }]);
    expect(recs.map((r) => r.line)).toEqual([2, 3, 4]);
    expect(recs[1].byteOffset).toBe(text.indexOf('{"a": "é'));
    expect(summary.warnings).toEqual([]);
  });

  test('bad element: byte offset of the error, other rows kept', async () => {
    const t = '[{"a": 1},\n {"a": tru},\n {"a": 2}]';
    const { recs } = await collect(t, { fileName: 'x.json' });
    expect(recs).toHaveLength(3);
    expect(recs[0].value).toEqual({ a: 1 });
    expect(recs[1].error).toMatch(/bad JSON/);
    expect(recs[1].line).toBe(2);
    // the error points inside row 1, at or after the bad literal
    expect(recs[1].byteOffset!).toBeGreaterThanOrEqual(t.indexOf('tru'));
    expect(recs[1].byteOffset!).toBeLessThanOrEqual(t.indexOf('tru') + 4);
    expect(recs[2].value).toEqual({ a: 2 });
  });

  test('missing comma, trailing data, truncated file are all reported', async () => {
    let r = await collect('[{"a":1} {"a":2}]', { fileName: 'x.json' });
    expect(r.recs.map((x) => x.error ?? 'ok')).toEqual(['ok', expect.stringMatching(/expected ',' or '\]'/), 'ok']);
    r = await collect('[{"a":1}] junk', { fileName: 'x.json' });
    expect(r.recs[1].error).toMatch(/after the closing/);
    r = await collect('[{"a":1}, {"a": "unterminated', { fileName: 'x.json' });
    expect(r.recs[1].error).toMatch(/unterminated/);
    expect(r.summary.warnings.join()).toMatch(/truncated/);
    r = await collect('[1, "two", null]', { fileName: 'x.json' });
    expect(r.recs.map((x) => x.value)).toEqual([1, 'two', null]);
  });

  test('UTF-8 BOM and CRLF', async () => {
    const { recs } = await collect('\ufeff[\r\n{"a":"b"}\r\n]', { fileName: 'x.json' });
    expect(recs.map((r) => r.value)).toEqual([{ a: 'b' }]);
  });
});

describe('JSONL reader', () => {
  const text = '{"a":1}\n\n{"a":"ü"}\r\n{"a": }\n{"a":4}';
  test.each([1, 3, 1 << 20])('rows, lines, offsets at chunk size %i', async (size) => {
    const { recs, summary } = await collect(chunked(text, size), { fileName: 'f.jsonl' });
    expect(summary.kind).toBe('jsonl');
    expect(recs.map((r) => r.row)).toEqual([0, 1, 2, 3]);
    expect(recs.map((r) => r.line)).toEqual([1, 3, 4, 5]);
    expect(recs[1].value).toEqual({ a: 'ü' });
    expect(recs[2].error).toMatch(/bad JSON/);
    // byte offset of the error: the '}' after "a": on line 4
    expect(recs[2].byteOffset).toBe(enc.encode(text.slice(0, text.indexOf('}', text.indexOf('{"a": }')))).length);
    expect(recs[3].value).toEqual({ a: 4 });
  });

  test('a .json file holding JSON lines is read as JSON lines', async () => {
    const { recs, summary } = await collect('{"a":1}\n{"a":2}\n', { fileName: 'f.json' });
    expect(summary.kind).toBe('jsonl');
    expect(recs.map((r) => r.value)).toEqual([{ a: 1 }, { a: 2 }]);
  });

  test('a .json file holding one object with one list uses the list', async () => {
    const { recs, summary } = await collect('{\n "data": [{"a":1}, {"a":2}]\n}', { fileName: 'f.json' });
    expect(recs.map((r) => r.value)).toEqual([{ a: 1 }, { a: 2 }]);
    expect(summary.warnings.join()).toMatch(/'data'/);
  });

  test('invalid UTF-8 is reported, not decoded into garbage', async () => {
    const bytes = new Uint8Array([...enc.encode('{"a":"'), 0xff, 0xfe, ...enc.encode('"}\n{"a":1}\n')]);
    const { recs } = await collect(bytes, { fileName: 'f.jsonl' });
    expect(recs[0].error).toMatch(/UTF-8/);
    expect(recs[1].value).toEqual({ a: 1 });
  });
});

describe('CSV and text readers', () => {
  test('CSV with quotes, escaped quotes, embedded newlines, CRLF', async () => {
    const csv = 'instruction,input,output\r\n"Say ""hi""",,"line1\nline2"\r\nplain,x,y\r\nbad,row\r\n';
    for (const size of [1, 4, 1 << 20]) {
      const { recs, summary } = await collect(chunked(csv, size), { fileName: 'd.csv' });
      expect(summary.kind).toBe('csv');
      expect(recs[0].value).toEqual({ instruction: 'Say "hi"', input: '', output: 'line1\nline2' });
      expect(recs[1].value).toEqual({ instruction: 'plain', input: 'x', output: 'y' });
      expect(recs[1].line).toBe(4);
      expect(recs[2].error).toMatch(/wrong number of columns: 2 \(the header has 3\)/);
      expect(recs[2].line).toBe(5);
    }
  });

  test('unterminated quoted CSV field', async () => {
    const { recs } = await collect('a,b\n"x,y\n', { fileName: 'd.csv' });
    expect(recs[0].error).toMatch(/unterminated quoted field/);
  });

  test('.txt: one text row per non-blank line, blank lines counted', async () => {
    const { recs, summary } = await collect('first line\n\nsecond line\n', { fileName: 'c.txt' });
    expect(recs.map((r) => r.value)).toEqual([{ text: 'first line' }, { text: 'second line' }]);
    expect(summary.warnings.join()).toMatch(/1 blank line/);
  });
});

describe('sources and progress', () => {
  test('Blob and ReadableStream sources, progress reaches the total', async () => {
    const lines = Array.from({ length: 5000 }, (_, i) => JSON.stringify({ text: `row ${i}` })).join('\n');
    const blob = new Blob([lines]);
    const seen: number[] = [];
    const { recs } = await collect(blob, {
      fileName: 'x.jsonl',
      progressEveryBytes: 1000,
      onProgress: (p) => {
        seen.push(p.bytesDone);
        expect(p.totalBytes).toBe(blob.size);
      },
    });
    expect(recs).toHaveLength(5000);
    expect(seen.length).toBeGreaterThan(1);
    expect(seen[seen.length - 1]).toBe(blob.size);
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThanOrEqual(seen[i - 1]);
    const stream = new Blob([lines]).stream();
    expect((await collect(stream, { fileName: 'x.jsonl' })).recs).toHaveLength(5000);
  });

  test('parseJsonBytes names the line and byte of the error', () => {
    const p = parseJsonBytes(enc.encode('{\n "a": 1,\n "b": ]\n}'));
    expect(p.error).toMatch(/bad JSON/);
    expect(p.errorLine).toBe(2);
    expect(p.errorByte).toBe('{\n "a": 1,\n "b": '.length);
  });
});
