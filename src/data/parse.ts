// File → validation report + canonical examples. Streaming: rows are converted as they are read,
// only a small sample is buffered for format detection.
import { columnSpec, convertRow } from './convert.ts';
import { detectFormat, type Detection } from './detect.ts';
import { hash53 } from './hash.ts';
import { addWarning, coded, dataMessage, englishText, type WarningList } from './messages.ts';
import { readRecords, type RawRecord, type ReadSummary } from './records.ts';
import type { ByteSource } from './source.ts';
import type {
  DatasetFormat,
  DatasetInfoEntry,
  Example,
  FileKind,
  ParsedDataset,
  ProgressFn,
  RowIssue,
  ValidationReport,
} from './types.ts';

export interface ParseOptions {
  /** File name, used for the report and to pick the reader by extension. */
  fileName?: string;
  /** Force a reader instead of guessing from the extension / first byte. */
  fileKind?: FileKind;
  /** A dataset_info.json entry: its formatting / columns / tags override detection. */
  datasetInfo?: DatasetInfoEntry;
  /** Force a format (skips detection). */
  format?: Exclude<DatasetFormat, 'unknown' | 'ranking'>;
  onProgress?: ProgressFn;
  /** Progress is reported at most once per this many bytes (default 1 MiB). */
  progressEveryBytes?: number;
  signal?: AbortSignal;
  /** Rows sampled for detection (default 200). */
  detectRows?: number;
  /** Keep at most this many issues in the report (the counts stay exact); default 100 000. */
  maxIssues?: number;
}

export async function parseDataset(src: ByteSource, opts: ParseOptions = {}): Promise<ParsedDataset> {
  const file = opts.fileName ?? '<data>';
  const gen = readRecords(src, {
    fileName: opts.fileName,
    kind: opts.fileKind,
    onProgress: opts.onProgress,
    progressEveryBytes: opts.progressEveryBytes,
    signal: opts.signal,
  });
  const sample: RawRecord[] = [];
  const detectRows = opts.detectRows ?? 200;
  let summary: ReadSummary | undefined;
  for (;;) {
    if (sample.length >= detectRows) break;
    const r = await gen.next();
    if (r.done) {
      summary = r.value;
      break;
    }
    sample.push(r.value);
  }
  const sampleValues = sample.filter((r) => r.error === undefined).map((r) => r.value);
  const kindGuess: FileKind = opts.fileKind ?? summary?.kind ?? (/\.txt$/i.test(file) ? 'txt' : 'json');
  let det: Detection;
  if (opts.format) {
    const becauseCode = dataMessage('detect-given', { format: opts.format });
    det = {
      format: opts.format,
      because: englishText(becauseCode),
      becauseCode,
      spec: columnSpec(opts.format, opts.datasetInfo),
    };
  } else det = detectFormat(sampleValues, kindGuess, opts.datasetInfo);

  const unmapped: string[] = [];
  if (opts.datasetInfo && det.spec) {
    const mapped = new Set(Object.values(det.spec.columns).filter((v): v is string => typeof v === 'string'));
    for (const k of ['history', 'system', 'tools']) {
      if (!mapped.has(k) && sampleValues.some((v) => v !== null && typeof v === 'object' && k in (v as object)))
        unmapped.push(k);
    }
  }
  const maxIssues = opts.maxIssues ?? 100_000;
  const invalid: RowIssue[] = [];
  let issuesDropped = 0;
  const examples: Example[] = [];
  const seen = new Map<number, number[]>();
  let rows = 0;
  const addIssue = (i: RowIssue) => {
    if (invalid.length < maxIssues) invalid.push(i);
    else issuesDropped++;
  };
  const rawField = kindGuess === 'csv' ? '<csv>' : kindGuess === 'txt' ? '<text>' : '<json>';
  const handle = (r: RawRecord) => {
    rows++;
    const where = { row: r.row, line: r.line, ...(r.byteOffset !== undefined ? { byteOffset: r.byteOffset } : {}) };
    if (r.error !== undefined) {
      // The readers set errorCode with every error (tests/unit/data/messages.test.ts checks the text matches).
      addIssue({ ...where, field: rawField, reason: r.error, ...r.errorCode! });
      return;
    }
    if (!det.spec) {
      addIssue({ ...where, field: '<row>', ...coded('unknown-format-row') });
      return;
    }
    const c = convertRow(r.value, det.spec);
    if (!c.ok) {
      for (const i of c.issues.slice(0, 8)) addIssue({ ...where, ...i });
      return;
    }
    const ex: Example =
      'text' in c
        ? { kind: 'text', row: r.row, line: r.line, text: c.text }
        : 'pair' in c
          ? { kind: 'pair', row: r.row, line: r.line, ...c.pair }
          : { kind: 'chat', row: r.row, line: r.line, conversation: c.conversation };
    const key = hash53('text' in c ? c.text : JSON.stringify('pair' in c ? c.pair : c.conversation));
    const g = seen.get(key);
    if (g) g.push(r.row);
    else seen.set(key, [r.row]);
    examples.push(ex);
  };
  for (const r of sample) handle(r);
  if (!summary) {
    for (;;) {
      const r = await gen.next();
      if (r.done) {
        summary = r.value;
        break;
      }
      handle(r.value);
    }
  }
  const w: WarningList = { warnings: [...summary.warnings], warningCodes: [...summary.warningCodes] };
  for (const k of unmapped) addWarning(w, 'warn-unmapped-key', { key: k });
  if (issuesDropped) addWarning(w, 'warn-issues-dropped', { n: issuesDropped, max: maxIssues });
  const duplicateGroups = [...seen.values()].filter((g) => g.length > 1);
  if (duplicateGroups.length) {
    const dupRows = duplicateGroups.reduce((a, g) => a + g.length - 1, 0);
    addWarning(w, 'warn-duplicates', { rows: dupRows, groups: duplicateGroups.length });
  }
  const report: ValidationReport = {
    file,
    fileKind: summary.kind,
    format: det.format,
    detectedBecause: det.because,
    detectedBecauseCode: det.becauseCode,
    rows,
    valid: examples.length,
    invalid,
    warnings: w.warnings,
    warningCodes: w.warningCodes,
    bytes: summary.bytes,
    duplicateGroups,
  };
  if (det.format === 'unknown' && rows > 0) {
    report.unsupported = det.because;
    report.unsupportedCode = det.becauseCode;
  }
  return { report, examples };
}

/** Number of distinct invalid rows in a report (a row may have several issues). */
export function invalidRowCount(report: ValidationReport): number {
  return report.rows - report.valid;
}
