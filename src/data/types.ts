// Public data types of the data pipeline. Consumed by the engine, the Worker, the UI and the CLI,
// so they carry no classes and survive structured cloning (postMessage, IndexedDB).
import type { DataMessage, DataMessageCode, DataMessageParams } from './messages.ts';

/** Canonical roles, following LLaMA-Factory's `Role` enum (src/llamafactory/data/data_utils.py). 'tool' is
 *  the OpenAI spelling of an observation and is treated exactly like 'observation'. */
export type Role = 'user' | 'assistant' | 'system' | 'observation' | 'function_call' | 'tool';

export interface Message {
  role: Role;
  content: string;
}

/** One chat example after parsing any input format. `tools` is the JSON text of a list of function
 *  schemas, as in LLaMA-Factory's `_tools` column. `messages` alternate prompt-side (user /
 *  observation) and answer-side (assistant / function_call) turns and end with an answer. */
export interface Conversation {
  system?: string;
  tools?: string;
  messages: Message[];
}

export type DatasetFormat = 'alpaca' | 'sharegpt' | 'openai' | 'text' | 'ranking' | 'unknown';
export type FileKind = 'json' | 'jsonl' | 'csv' | 'txt';

/** A row the pipeline cannot use, and why. `row` is the 0-based index of the record in the file
 *  (array element, JSONL line with content, CSV data row); `line` is 1-based. `reason` is the English
 *  text of `code` with `params` (messages.ts), for the CLI; the studio translates the code. */
export interface RowIssue {
  row: number;
  line?: number;
  byteOffset?: number;
  field: string;
  reason: string;
  code: DataMessageCode;
  params?: DataMessageParams;
  cause?: DataMessage;
}

export interface ValidationReport {
  file: string;
  fileKind: FileKind;
  format: DatasetFormat;
  /** Human-readable reason for `format`, e.g. "key 'conversations' with from/value in 100 % of rows". */
  detectedBecause: string;
  detectedBecauseCode: DataMessage;
  /** Rows seen in the file (valid + invalid). */
  rows: number;
  valid: number;
  invalid: RowIssue[];
  /** Non-fatal remarks (blank lines ignored, unknown columns, …). */
  warnings: string[];
  /** `warnings` as codes, in the same order. */
  warningCodes: DataMessage[];
  /** Set when the whole file cannot be used for SFT (e.g. a ranking / preference dataset). */
  unsupported?: string;
  unsupportedCode?: DataMessage;
  bytes: number;
  /** Rows whose content equals an earlier row's (after parsing), as groups of row indices. */
  duplicateGroups: number[][];
}

/** One usable row. `kind: 'text'` rows are for continued pre-training, `kind: 'pair'` rows (a prompt
 *  ending with a user turn, a chosen and a rejected answer) for preference tuning (stage dpo). */
export type Example =
  | { kind: 'chat'; row: number; line?: number; conversation: Conversation }
  | { kind: 'text'; row: number; line?: number; text: string }
  | { kind: 'pair'; row: number; line?: number; conversation: Conversation; chosen: Message; rejected: Message };

export interface ParsedDataset {
  report: ValidationReport;
  examples: Example[];
}

export interface Progress {
  bytesDone: number;
  /** Total bytes when known (Blob, string, Uint8Array); undefined for an unsized stream. */
  totalBytes?: number;
  rows: number;
}
export type ProgressFn = (p: Progress) => void;

/** LLaMA-Factory dataset_info.json entry (src/llamafactory/data/parser.py, DatasetAttr). */
export interface DatasetInfoEntry {
  file_name?: string;
  hf_hub_url?: string;
  ms_hub_url?: string;
  script_url?: string;
  formatting?: 'alpaca' | 'sharegpt' | 'openai';
  ranking?: boolean;
  subset?: string;
  split?: string;
  num_samples?: number;
  columns?: Partial<Record<ColumnName, string>>;
  tags?: Partial<Record<TagName, string>>;
}

export type ColumnName =
  | 'prompt'
  | 'query'
  | 'response'
  | 'history'
  | 'messages'
  | 'system'
  | 'tools'
  | 'images'
  | 'videos'
  | 'audios'
  | 'chosen'
  | 'rejected'
  | 'kto_tag';
export type TagName =
  'role_tag' | 'content_tag' | 'user_tag' | 'assistant_tag' | 'observation_tag' | 'function_tag' | 'system_tag';

/** Token ids and labels of one training example (labels are -100 where no loss is taken). */
export interface EncodedExample {
  row: number;
  inputIds: Int32Array;
  labels: Int32Array;
  /** Token count before cutoff_len truncation. */
  fullLength: number;
  truncated: boolean;
  /** Preference pair (stage dpo): inputIds/labels above are the chosen answer's sequence, this is the
   *  rejected one's; both start with the same prompt tokens, masked in the labels. */
  rejected?: { inputIds: Int32Array; labels: Int32Array; fullLength: number };
}

/** Several examples packed into one sequence of `cutoffLen` tokens. */
export interface PackedSequence {
  inputIds: Int32Array;
  labels: Int32Array;
  /** Position ids restart at 0 at every example; padding gets 0. */
  positionIds: Int32Array;
  /** Start offsets of each example plus the end of the last one (length = examples + 1);
   *  tokens from seqStarts[last] to cutoffLen are padding. */
  seqStarts: Int32Array;
  rows: number[];
}

export const IGNORE_INDEX = -100;
