// Streaming record readers for .json (array), .jsonl, .csv and .txt. They work on bytes so that every
// error names an exact byte offset and line, never decode a 200 MB file into one string, and report
// progress as they go. Every record either parses or comes back as an error record: nothing is dropped.
import {
  addWarning,
  coded,
  jsonErrorMessage,
  englishText,
  stripJsonPosition,
  type DataMessage,
  type WarningList,
} from './messages.ts';
import { openSource, type ByteSource } from './source.ts';
import type { FileKind, ProgressFn } from './types.ts';

export interface RawRecord {
  row: number;
  line: number;
  /** Undefined where unknown (CSV). */
  byteOffset?: number;
  value?: unknown;
  /** Set when the record could not be read; `value` is then undefined. */
  error?: string;
  /** `error` as a code (messages.ts); set with `error`. */
  errorCode?: DataMessage;
}

export interface ReadOptions {
  kind?: FileKind;
  fileName?: string;
  onProgress?: ProgressFn;
  /** Progress is reported at most once per this many bytes (plus once at the end). */
  progressEveryBytes?: number;
  signal?: AbortSignal;
}

export interface ReadSummary {
  kind: FileKind;
  bytes: number;
  warnings: string[];
  /** `warnings` as codes, in the same order. */
  warningCodes: DataMessage[];
}

const NL = 0x0a,
  CR = 0x0d,
  SP = 0x20,
  TAB = 0x09,
  QUOTE = 0x22,
  BSL = 0x5c;
const LBRACE = 0x7b,
  RBRACE = 0x7d,
  LBRACK = 0x5b,
  RBRACK = 0x5d,
  COMMA = 0x2c;
const isWs = (b: number) => b === SP || b === NL || b === CR || b === TAB;

export function kindFromName(name: string): FileKind | undefined {
  const m = /\.([a-z0-9]+)$/i.exec(name);
  const ext = m?.[1].toLowerCase();
  if (ext === 'json') return 'json';
  if (ext === 'jsonl' || ext === 'ndjson') return 'jsonl';
  if (ext === 'csv') return 'csv';
  if (ext === 'txt' || ext === 'text') return 'txt';
  return undefined;
}

const fatalDecoder = new TextDecoder('utf-8', { fatal: true });

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  let n = 0;
  for (const p of parts) n += p.byteLength;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}

function utf8Len(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

interface Parsed {
  value?: unknown;
  error?: string;
  errorCode?: DataMessage;
  errorByte?: number;
  errorLine?: number;
}

// An error record's `error` and `errorCode`.
function failure(...args: Parameters<typeof coded>): { error: string; errorCode: DataMessage } {
  const { reason, ...m } = coded(...args);
  return { error: reason, errorCode: m };
}

/** JSON.parse with an error that says where (byte offset and line inside `bytes`). */
export function parseJsonBytes(bytes: Uint8Array): Parsed {
  let text: string;
  try {
    text = fatalDecoder.decode(bytes);
  } catch {
    return { ...failure('invalid-utf8'), errorByte: 0 };
  }
  try {
    return { value: JSON.parse(text) };
  } catch (e) {
    const msg = (e as Error).message;
    const m = /position (\d+)/.exec(msg);
    let pos = m ? Number(m[1]) : /Unexpected end of JSON input/.test(msg) ? text.length : -1;
    if (pos < 0) pos = locateJsonError(text);
    const before = text.slice(0, pos);
    let lines = 0;
    for (let i = 0; i < before.length; i++) if (before.charCodeAt(i) === NL) lines++;
    // The position V8 names is relative to this record; the report gives the absolute byte offset.
    const reason = stripJsonPosition(msg);
    const errorCode = jsonErrorMessage(reason);
    return { error: englishText(errorCode), errorCode, errorByte: utf8Len(before), errorLine: lines };
  }
}

// V8 omits the position for some messages ("Unexpected token 'x', "..." is not valid JSON"); find the
// first character a JSON grammar cannot accept so the report can still point at it.
function locateJsonError(text: string): number {
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  const fail = (): never => {
    throw i;
  };
  const value = (): void => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      ws();
      if (text[i] === '}') {
        i++;
        return;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail();
        str();
        ws();
        if (text[i] !== ':') fail();
        i++;
        value();
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return;
        }
        fail();
      }
    } else if (c === '[') {
      i++;
      ws();
      if (text[i] === ']') {
        i++;
        return;
      }
      for (;;) {
        value();
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') {
          i++;
          return;
        }
        fail();
      }
    } else if (c === '"') str();
    else {
      const m = /^(-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?|true|false|null)/.exec(text.slice(i, i + 64));
      if (!m) fail();
      i += m![0].length;
    }
  };
  const str = () => {
    i++;
    while (i < text.length) {
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return;
      }
      if (c < 0x20) fail();
      i += c === 0x5c ? 2 : 1;
    }
    fail();
  };
  try {
    value();
    ws();
    return i;
  } catch (p) {
    return typeof p === 'number' ? Math.min(p, text.length) : 0;
  }
}

class Progressor {
  private last = 0;
  constructor(
    private fn: ProgressFn | undefined,
    private total: number | undefined,
    private every: number,
  ) {}
  tick(done: number, rows: number, force = false) {
    if (!this.fn) return;
    if (force || done - this.last >= this.every) {
      this.last = done;
      this.fn({ bytesDone: done, totalBytes: this.total, rows });
    }
  }
}

/**
 * Reads the records of a file. Yields one RawRecord per row (parsed value or error) and returns a
 * summary with the file kind actually used and non-fatal warnings.
 */
export async function* readRecords(src: ByteSource, opts: ReadOptions = {}): AsyncGenerator<RawRecord, ReadSummary> {
  const opened = openSource(src);
  const total = opened.totalBytes;
  const progress = new Progressor(opts.onProgress, total, opts.progressEveryBytes ?? 1 << 20);
  const w: WarningList = { warnings: [], warningCodes: [] };
  const it = opened.chunks[Symbol.asyncIterator]();

  // Peek at the first bytes to tell a JSON array from JSON lines when the name does not settle it.
  const head: Uint8Array[] = [];
  let headBytes = 0;
  let firstByte = -1;
  while (firstByte < 0) {
    const r = await it.next();
    if (r.done) break;
    head.push(r.value);
    headBytes += r.value.byteLength;
    const start = head.length === 1 && r.value[0] === 0xef && r.value[1] === 0xbb && r.value[2] === 0xbf ? 3 : 0;
    for (let i = start; i < r.value.byteLength; i++)
      if (!isWs(r.value[i])) {
        firstByte = r.value[i];
        break;
      }
  }
  let kind: FileKind =
    opts.kind ??
    kindFromName(opts.fileName ?? '') ??
    (firstByte === LBRACK ? 'json' : firstByte === LBRACE ? 'jsonl' : 'txt');
  const chunks = (async function* () {
    yield* head;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  })();

  if (kind === 'json' && firstByte === LBRACE) {
    // A .json file that is not an array: JSON lines named .json (common), or one object.
    const single = await tryWholeObject(chunks, total, headBytes);
    if (single.kind === 'object') {
      progress.tick(single.bytes, 1, true);
      const obj = single.value as Record<string, unknown>;
      const arrays = Object.entries(obj).filter(([, v]) => Array.isArray(v));
      if (arrays.length === 1 && Object.keys(obj).length <= 3) {
        addWarning(w, 'warn-single-object', { key: arrays[0][0] });
        let row = 0;
        for (const v of arrays[0][1] as unknown[]) yield { row: row++, line: 1, byteOffset: 0, value: v };
      } else {
        yield { row: 0, line: 1, byteOffset: 0, value: obj };
      }
      return { kind: 'json', bytes: single.bytes, ...w };
    }
    kind = 'jsonl';
    if (single.kind === 'lines') {
      return yield* readLines(single.replay, 'jsonl', progress, w, opts.signal);
    }
  }
  if (kind === 'json') return yield* readJsonArray(chunks, progress, w, opts.signal);
  if (kind === 'csv') return yield* readCsv(chunks, progress, w, opts.signal);
  return yield* readLines(chunks, kind, progress, w, opts.signal);
}

const WHOLE_OBJECT_LIMIT = 64 << 20;

type WholeTry =
  { kind: 'object'; value: unknown; bytes: number } | { kind: 'lines'; replay: AsyncIterable<Uint8Array> };

// Buffers up to 64 MiB to see whether the file is a single JSON value; otherwise replays the bytes
// as JSON lines (a 200 MB .json starting with '{' is JSON lines, never one object).
async function tryWholeObject(
  chunks: AsyncIterable<Uint8Array>,
  total: number | undefined,
  _head: number,
): Promise<WholeTry> {
  const it = chunks[Symbol.asyncIterator]();
  const buf: Uint8Array[] = [];
  let n = 0;
  let ended = false;
  if (total === undefined || total <= WHOLE_OBJECT_LIMIT) {
    for (;;) {
      const r = await it.next();
      if (r.done) {
        ended = true;
        break;
      }
      buf.push(r.value);
      n += r.value.byteLength;
      if (n > WHOLE_OBJECT_LIMIT) break;
    }
  }
  if (ended) {
    const all = concat(buf);
    // Only a single value spanning lines counts; one-object-per-line files are JSON lines.
    const nonEmptyLines = countNonBlankLines(all);
    if (nonEmptyLines > 1) {
      const p = parseJsonBytes(all);
      if (p.error === undefined && p.value !== null && typeof p.value === 'object' && !Array.isArray(p.value)) {
        return { kind: 'object', value: p.value, bytes: all.byteLength };
      }
    }
  }
  const replay = (async function* () {
    yield* buf;
    if (!ended)
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        yield r.value;
      }
  })();
  return { kind: 'lines', replay };
}

function countNonBlankLines(b: Uint8Array): number {
  let lines = 0,
    nonWs = false;
  for (let i = 0; i < b.byteLength; i++) {
    const c = b[i];
    if (c === NL) {
      if (nonWs) lines++;
      nonWs = false;
    } else if (!isWs(c)) nonWs = true;
  }
  return lines + (nonWs ? 1 : 0);
}

async function* readLines(
  chunks: AsyncIterable<Uint8Array>,
  kind: FileKind,
  progress: Progressor,
  w: WarningList,
  signal?: AbortSignal,
): AsyncGenerator<RawRecord, ReadSummary> {
  let parts: Uint8Array[] = [];
  let lineStart = 0; // byte offset of the current line
  let offset = 0; // byte offset of the current chunk
  let lineNo = 1;
  let row = 0;
  let blank = 0;
  const handle = (bytes: Uint8Array, line: number, at: number): RawRecord | null => {
    let end = bytes.byteLength;
    if (end && bytes[end - 1] === CR) end--;
    let s = 0;
    if (line === 1 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) s = 3;
    let k = s;
    while (k < end && isWs(bytes[k])) k++;
    if (k === end) {
      blank++;
      return null;
    }
    const body = bytes.subarray(s, end);
    if (kind === 'txt') {
      try {
        return { row: row++, line, byteOffset: at, value: { text: fatalDecoder.decode(body) } };
      } catch {
        return { row: row++, line, byteOffset: at, ...failure('invalid-utf8') };
      }
    }
    const p = parseJsonBytes(body);
    if (p.error !== undefined)
      return { row: row++, line, byteOffset: at + s + (p.errorByte ?? 0), error: p.error, errorCode: p.errorCode };
    return { row: row++, line, byteOffset: at, value: p.value };
  };
  for await (const chunk of chunks) {
    if (signal?.aborted) throw signal.reason ?? new Error('aborted');
    let s = 0;
    for (;;) {
      const i = chunk.indexOf(NL, s);
      if (i < 0) break;
      parts.push(chunk.subarray(s, i));
      const rec = handle(concat(parts), lineNo, lineStart);
      parts = [];
      lineNo++;
      lineStart = offset + i + 1;
      s = i + 1;
      if (rec) yield rec;
      progress.tick(offset + s, row);
    }
    if (s < chunk.byteLength) parts.push(chunk.subarray(s));
    offset += chunk.byteLength;
    progress.tick(offset, row);
  }
  if (parts.length) {
    const rec = handle(concat(parts), lineNo, lineStart);
    if (rec) yield rec;
  }
  progress.tick(offset, row, true);
  if (blank > 0 && kind === 'txt') addWarning(w, 'warn-blank-text-lines', { n: blank });
  else if (blank > 1 || (blank === 1 && lineNo > 1 && parts.length)) addWarning(w, 'warn-blank-lines', { n: blank });
  return { kind, bytes: offset, ...w };
}

async function* readJsonArray(
  chunks: AsyncIterable<Uint8Array>,
  progress: Progressor,
  w: WarningList,
  signal?: AbortSignal,
): AsyncGenerator<RawRecord, ReadSummary> {
  // 0 before '[', 1 expecting element or ']', 2 inside element, 3 after element, 4 after ']'
  let state = 0;
  let depth = 0,
    inStr = false,
    esc = false;
  let offset = 0,
    line = 1,
    row = 0;
  let elemParts: Uint8Array[] = [];
  let elemStart = 0,
    elemLine = 1,
    segStart = 0;
  let sawComma = false;
  let trailingReported = false;
  const finishElem = (chunk: Uint8Array, endInChunk: number): RawRecord => {
    elemParts.push(chunk.subarray(segStart, endInChunk));
    const bytes = concat(elemParts);
    elemParts = [];
    const p = parseJsonBytes(bytes);
    const r = row++;
    if (p.error !== undefined) {
      return {
        row: r,
        line: elemLine + (p.errorLine ?? 0),
        byteOffset: elemStart + (p.errorByte ?? 0),
        error: p.error,
        errorCode: p.errorCode,
      };
    }
    return { row: r, line: elemLine, byteOffset: elemStart, value: p.value };
  };
  const out: RawRecord[] = [];
  for await (const chunk of chunks) {
    if (signal?.aborted) throw signal.reason ?? new Error('aborted');
    segStart = 0;
    const n = chunk.byteLength;
    for (let i = 0; i < n; i++) {
      const b = chunk[i];
      if (state === 2) {
        if (inStr) {
          if (esc) esc = false;
          else if (b === BSL) esc = true;
          else if (b === QUOTE) inStr = false;
          else if (b === NL) line++;
          continue;
        }
        if (b === QUOTE) {
          inStr = true;
          continue;
        }
        if (b === LBRACE || b === LBRACK) {
          depth++;
          continue;
        }
        if (b === RBRACE || b === RBRACK) {
          depth--;
          if (depth === 0) {
            out.push(finishElem(chunk, i + 1));
            state = 3;
            progress.tick(offset + i, row);
          } else if (depth < 0) {
            depth = 0;
            out.push(finishElem(chunk, i));
            state = 4;
          }
          continue;
        }
        if (depth === 0 && (b === COMMA || isWs(b))) {
          out.push(finishElem(chunk, i));
          state = b === COMMA ? 1 : 3;
          sawComma = b === COMMA;
          if (b === NL) line++;
          continue;
        }
        if (b === NL) line++;
        continue;
      }
      if (b === NL) {
        line++;
        continue;
      }
      if (isWs(b)) continue;
      if (state === 0) {
        if (offset + i < 3 && (b === 0xef || b === 0xbb || b === 0xbf)) continue; // BOM
        if (b === LBRACK) {
          state = 1;
          sawComma = false;
          continue;
        }
        out.push({
          row: row++,
          line,
          byteOffset: offset + i,
          ...failure('array-open-expected', { found: String.fromCharCode(b) }),
        });
        state = 4;
        trailingReported = true;
        break;
      }
      if (state === 1) {
        if (b === RBRACK) {
          if (sawComma) addWarning(w, 'warn-trailing-comma', { offset: offset + i });
          state = 4;
          continue;
        }
        if (b === COMMA) {
          out.push({ row: row++, line, byteOffset: offset + i, ...failure('array-empty-element') });
          continue;
        }
        state = 2;
        depth = 0;
        inStr = false;
        esc = false;
        elemStart = offset + i;
        elemLine = line;
        segStart = i;
        elemParts = [];
        i--; // re-read this byte inside the element
        continue;
      }
      if (state === 3) {
        if (b === COMMA) {
          state = 1;
          sawComma = true;
          continue;
        }
        if (b === RBRACK) {
          state = 4;
          continue;
        }
        out.push({
          row: row,
          line,
          byteOffset: offset + i,
          ...failure('array-separator-expected', { row: row - 1, found: String.fromCharCode(b) }),
        });
        row++;
        state = 2;
        depth = 0;
        inStr = false;
        esc = false;
        elemStart = offset + i;
        elemLine = line;
        segStart = i;
        elemParts = [];
        i--;
        continue;
      }
      if (state === 4 && !trailingReported) {
        trailingReported = true;
        out.push({ row: row++, line, byteOffset: offset + i, ...failure('array-trailing-data') });
      }
    }
    if (state === 2) {
      elemParts.push(chunk.subarray(segStart));
      segStart = 0;
    }
    offset += n;
    for (const r of out) yield r;
    out.length = 0;
    progress.tick(offset, row);
  }
  if (state === 2) {
    const bytes = concat(elemParts);
    elemParts = [];
    // A scalar element right before EOF parses; an unbalanced object does not.
    const p: Parsed = depth === 0 && !inStr ? parseJsonBytes(bytes) : { ...failure('row-unterminated'), errorByte: 0 };
    const r = row++;
    if (p.error !== undefined)
      yield {
        row: r,
        line: elemLine,
        byteOffset: elemStart,
        ...(inStr ? failure('row-unterminated-string') : { error: p.error, errorCode: p.errorCode }),
      };
    else yield { row: r, line: elemLine, byteOffset: elemStart, value: p.value };
    addWarning(w, 'warn-truncated-array');
  } else if (state === 0) {
    if (offset > 0) addWarning(w, 'warn-no-array');
  } else if (state !== 4) {
    addWarning(w, 'warn-truncated-array');
  }
  progress.tick(offset, row, true);
  return { kind: 'json', bytes: offset, ...w };
}

async function* readCsv(
  chunks: AsyncIterable<Uint8Array>,
  progress: Progressor,
  w: WarningList,
  signal?: AbortSignal,
): AsyncGenerator<RawRecord, ReadSummary> {
  const dec = new TextDecoder('utf-8');
  let header: string[] | null = null;
  let field = '';
  let fields: string[] = [];
  let inQuotes = false,
    quoteClosed = false,
    fieldQuoted = false;
  let line = 1,
    recLine = 1,
    row = 0,
    offset = 0;
  let pendingCR = false;
  const out: RawRecord[] = [];
  const endRecord = () => {
    fields.push(field);
    field = '';
    fieldQuoted = false;
    quoteClosed = false;
    const rec = fields;
    fields = [];
    if (rec.length === 1 && rec[0] === '') return; // blank line
    if (!header) {
      header = rec.map((h) => h.trim());
      return;
    }
    if (rec.length !== header.length) {
      out.push({
        row: row++,
        line: recLine,
        ...failure('csv-column-count', { got: rec.length, expected: header.length }),
      });
      return;
    }
    const obj: Record<string, string> = {};
    header.forEach((h, k) => {
      obj[h] = rec[k];
    });
    out.push({ row: row++, line: recLine, value: obj });
  };
  const feed = (text: string) => {
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (pendingCR) {
        pendingCR = false;
        if (c === '\n') continue;
      }
      if (inQuotes) {
        if (c === '"') {
          if (text[i + 1] === '"') {
            field += '"';
            i++;
          } else if (i + 1 === text.length) {
            inQuotes = false;
            quoteClosed = true;
          } // may be "" split across chunks: handled below
          else {
            inQuotes = false;
            quoteClosed = true;
          }
        } else {
          if (c === '\n') line++;
          field += c;
        }
        continue;
      }
      if (c === '"' && quoteClosed) {
        field += '"';
        inQuotes = true;
        quoteClosed = false;
        continue;
      } // "" across a chunk edge
      if (c === '"' && field === '' && !fieldQuoted) {
        inQuotes = true;
        fieldQuoted = true;
        continue;
      }
      if (c === ',') {
        fields.push(field);
        field = '';
        fieldQuoted = false;
        quoteClosed = false;
        continue;
      }
      if (c === '\n' || c === '\r') {
        endRecord();
        line++;
        recLine = line;
        if (c === '\r') pendingCR = true;
        continue;
      }
      quoteClosed = false;
      field += c;
    }
  };
  let first = true;
  for await (const chunk of chunks) {
    if (signal?.aborted) throw signal.reason ?? new Error('aborted');
    let text = dec.decode(chunk, { stream: true });
    if (first && text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    first = false;
    feed(text);
    offset += chunk.byteLength;
    for (const r of out) yield r;
    out.length = 0;
    progress.tick(offset, row);
  }
  feed(dec.decode());
  if (inQuotes) {
    out.push({ row: row++, line: recLine, ...failure('csv-unterminated-quote') });
    fields = [];
    field = '';
  } else if (field !== '' || fields.length) endRecord();
  for (const r of out) yield r;
  if (!header) addWarning(w, 'warn-csv-no-header');
  progress.tick(offset, row, true);
  return { kind: 'csv', bytes: offset, ...w };
}
