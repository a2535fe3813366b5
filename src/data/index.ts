// Public API of the data pipeline (no GPU, no DOM): used by the Worker, the engine, the UI and the CLI.
export type {
  Role,
  Message,
  Conversation,
  DatasetFormat,
  FileKind,
  RowIssue,
  ValidationReport,
  Example,
  ParsedDataset,
  Progress,
  ProgressFn,
  DatasetInfoEntry,
  ColumnName,
  TagName,
  EncodedExample,
  PackedSequence,
} from './types.ts';
export { IGNORE_INDEX } from './types.ts';
export { openSource, readText, type ByteSource } from './source.ts';
export {
  readRecords,
  kindFromName,
  parseJsonBytes,
  type RawRecord,
  type ReadOptions,
  type ReadSummary,
} from './records.ts';
export {
  columnSpec,
  convertRow,
  convertAlpaca,
  convertSharegpt,
  convertText,
  checkFunctionCall,
  type ColumnSpec,
  type Converted,
  type FieldIssue,
} from './convert.ts';
export { detectFormat, type Detection } from './detect.ts';
export { convertPair, encodePair, pairwiseSequences, type PreferencePair } from './preference.ts';
export { parseDatasetInfo, type DatasetInfo, type DatasetInfoError } from './datasetInfo.ts';
export {
  DATA_MESSAGES,
  DATA_MESSAGE_CODES,
  fillSlots,
  slotsOf,
  dataMessage,
  englishText,
  jsonErrorMessage,
  type DataMessage,
  type DataMessageCode,
  type DataMessageParams,
} from './messages.ts';
export { parseDataset, invalidRowCount, type ParseOptions } from './parse.ts';
export {
  HfTokenizer,
  loadTokenizer,
  tokenContent,
  pickChatTemplate,
  type TextTokenizer,
  type SpecialToken,
  type LoadTokenizerOptions,
} from './tokenizer.ts';
export {
  ChatTemplate,
  CHATML_TEMPLATE,
  toTemplateMessages,
  toolsOf,
  type TemplateMessage,
  type TemplateContext,
} from './template.ts';
export {
  conversationSegments,
  inferSeqlen,
  tokenizePairs,
  tokenizeSegments,
  splitWholeIds,
  buildSupervised,
  encodeText,
  encodeExample,
  EncodeError,
  type EncodeOptions,
  type Segments,
  type TextPair,
  type TokenPair,
  type EncodedWithText,
} from './encode.ts';
export { greedyKnapsack, packExamples, collateBatch, type PaddedBatch } from './pack.ts';
export { takeMaxSamples, splitTrainVal } from './split.ts';
export {
  tokenStats,
  textStats,
  histogram,
  niceStep,
  type TokenStats,
  type TextStats,
  type Histogram,
} from './stats.ts';
export { prepareDataset, chatTemplateFor, type PrepareOptions, type PreparedDataset } from './pipeline.ts';
export { hash53, sha256Hex, mulberry32 } from './hash.ts';
export {
  openDataStore,
  saveDatasetFile,
  loadDatasetFile,
  listDatasetFiles,
  deleteDatasetFile,
  tokenizedKey,
  saveTokenized,
  loadTokenized,
  flattenExamples,
  unflattenExamples,
  type StoredFile,
  type StoredFileInfo,
  type FlatExamples,
  type TokenizedDataset,
  type TokenizeKeyOptions,
} from './store.ts';
export { parseDatasetCollection, type NamedSource, type CollectionResult } from './collection.ts';
export type { ParseRequest, ParseMessage } from './parse.worker.ts';
