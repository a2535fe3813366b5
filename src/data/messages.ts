// Every message the data pipeline reports (row issues, warnings, detection reasons, dataset_info.json
// errors), keyed by a stable code. Reports carry the English text (the CLI and logs print it) next
// to the code and its parameters, so the studio can show the same message in the user's language.
// The English text is always produced from this table, which keeps text, code and parameters from
// drifting apart: the UI's English table is this one.

export const DATA_MESSAGES = {
  // Reading the file (records.ts)
  'invalid-utf8': 'invalid UTF-8 bytes',
  'bad-json': 'bad JSON: {detail}',
  'json-unexpected-end': 'bad JSON: Unexpected end of JSON input',
  'json-unexpected-token': "bad JSON: Unexpected token '{token}', {context} is not valid JSON",
  'json-not-valid': 'bad JSON: {context} is not valid JSON',
  'json-unexpected-number': 'bad JSON: Unexpected number',
  'json-unexpected-string': 'bad JSON: Unexpected string',
  'json-expected-property': "bad JSON: Expected property name or '}'",
  'json-expected-comma-bracket': "bad JSON: Expected ',' or ']' after array element",
  'json-expected-comma-brace': "bad JSON: Expected ',' or '}' after property value",
  'json-expected-colon': "bad JSON: Expected ':' after property name",
  'json-expected-quoted-name': 'bad JSON: Expected double-quoted property name',
  'json-unterminated-string': 'bad JSON: Unterminated string',
  'json-exponent-missing': 'bad JSON: Exponent part is missing a number',
  'json-fraction-unterminated': 'bad JSON: Unterminated fractional number',
  'json-minus-no-number': 'bad JSON: No number after minus sign',
  'json-control-char': 'bad JSON: Bad control character in string literal',
  'json-bad-escape': 'bad JSON: Bad escaped character',
  'json-bad-unicode-escape': 'bad JSON: Bad Unicode escape',
  'json-trailing-data': 'bad JSON: Unexpected non-whitespace character after JSON at position {position}',
  'array-open-expected': "expected '[' to open the JSON array, found '{found}'",
  'array-empty-element': "empty element: unexpected ',' in the array",
  'array-separator-expected': "expected ',' or ']' after row {row}, found '{found}' (the next row is read from here)",
  'array-trailing-data': "unexpected data after the closing ']' of the JSON array",
  'row-unterminated': 'unterminated row: the file ends inside it',
  'row-unterminated-string': 'unterminated string: the file ends inside this row',
  'csv-column-count': 'wrong number of columns: {got} (the header has {expected})',
  'csv-unterminated-quote': 'unterminated quoted field: the file ends inside it',
  'warn-single-object': "the file is one JSON object; using its array '{key}' as the rows",
  'warn-trailing-comma': "trailing comma before ']' at byte {offset} (not strict JSON; accepted)",
  'warn-truncated-array': "the file ends before the closing ']' of the JSON array (truncated file?)",
  'warn-no-array': 'the file holds no JSON array',
  'warn-csv-no-header': 'the CSV file has no header row',
  'warn-blank-text-lines': '{n} blank line(s) ignored (a blank line is not a text row)',
  'warn-blank-lines': '{n} blank line(s) ignored',

  // Converting rows (convert.ts)
  'wrong-type-string': 'wrong type: expected a string, got {got}',
  'wrong-type-object': 'wrong type: expected an object, got {got}',
  'wrong-type-text-object': "wrong type: expected an object with '{column}', got {got}",
  'wrong-type-message-list': 'wrong type: expected a list of messages, got {got}',
  'wrong-type-message': 'wrong type: expected a message object, got {got}',
  'history-not-list': 'wrong type: history must be a list of [question, answer] pairs, got {got}',
  'history-item-not-pair': 'wrong type: each history item must be a [question, answer] pair of strings',
  'history-empty-question': 'empty turn: the question is empty',
  'history-empty-answer': 'empty turn: the answer is empty',
  'output-is-list': "output is a list: a preference row puts its answers in 'chosen' and 'rejected' (stage dpo)",
  'missing-output': 'missing output',
  'empty-output': 'empty output: nothing to train on',
  'empty-instruction': 'empty turn: instruction and input are both empty',
  'tools-bad-json': 'bad JSON in tools: {detail}',
  'tools-not-list': 'wrong type: tools must be a list of function schemas, got {got}',
  'tool-no-name': 'a tool must be an object with a string "name"',
  'tool-call-no-name': 'a tool call must have function.name',
  'function-call-not-json': 'function_call content is not JSON (expected {"name": …, "arguments": …})',
  'function-call-empty': 'function_call content is an empty list',
  'function-call-bad-shape': 'function_call content must be {"name": string, "arguments": …}',
  'content-part-unsupported': 'unsupported content part: only text parts can be trained on',
  'content-part-unsupported-type': "unsupported content part '{type}': only text parts can be trained on",
  'missing-column': "missing '{column}' (the row has {keys})",
  'missing-column-no-keys': "missing '{column}' (the row has no keys)",
  'missing-key': "missing '{key}'",
  'unknown-tag': "unknown tag '{tag}' (expected one of {known})",
  'system-not-first': 'system message at position {index}: only the first message may be a system prompt',
  'empty-message': "empty turn: message {index} ('{tag}') has no content",
  'non-alternating': "non-alternating roles: turn {turn} is '{tag}' but a {expected} turn was expected",
  'no-messages': 'no messages',
  'no-final-answer': "the conversation ends with a '{tag}' turn: no assistant answer to train on",
  'empty-text': 'empty text',

  // Preference rows (preference.ts)
  'pair-missing-answer': "missing '{column}': a preference row needs a chosen and a rejected answer",
  'pair-empty-answer': "empty '{column}' answer",
  'pair-identical': 'chosen and rejected answers are identical: nothing to prefer',
  'pair-prompt-ends-with-answer':
    'the conversation before the answers ends with an assistant turn: chosen and rejected must answer a user turn',
  'pair-needs-dpo': 'preference row (chosen/rejected answers): train it with stage dpo',
  'dpo-needs-pair': 'preference tuning (stage dpo) trains on pairs: this row has no chosen and rejected answers',

  // Whole rows and the report (parse.ts)
  'unknown-format-row': 'unknown format',
  'warn-unmapped-key':
    'rows have a \'{key}\' key that dataset_info.json "columns" does not name: it is ignored, as LLaMA-Factory ignores it',
  'warn-issues-dropped': '{n} further issues not listed (the report keeps the first {max})',
  'warn-duplicates': '{rows} row(s) repeat an earlier row exactly ({groups} group(s)); they are kept',

  // Why a format was chosen (detect.ts, parse.ts)
  'detect-given': 'format given: {format}',
  'detect-info-ranking': 'dataset_info.json: "ranking": true',
  'detect-info-text': "dataset_info.json: columns {prompt: '{column}'} only (pre-training text)",
  'detect-info-formatting': 'dataset_info.json: "formatting": "{format}"',
  'detect-info-formatting-columns': 'dataset_info.json: "formatting": "{format}" with custom columns',
  'detect-info-formatting-tags': 'dataset_info.json: "formatting": "{format}" and tags',
  'detect-info-formatting-columns-tags': 'dataset_info.json: "formatting": "{format}" with custom columns and tags',
  'detect-plain-text': 'plain text file: one row per line',
  'detect-no-rows': 'the file has no readable rows',
  'detect-ranking': "keys 'chosen' and 'rejected' in {pct} % of rows (first {n} rows)",
  'detect-sharegpt': "key 'conversations' with from/value in {pct} % of rows (first {n} rows)",
  'detect-openai': "key 'messages' with role/content in {pct} % of rows (first {n} rows)",
  'detect-sharegpt-messages': "key 'messages' with from/value in {pct} % of rows (first {n} rows)",
  'detect-openai-conversations': "key 'conversations' with role/content in {pct} % of rows (first {n} rows)",
  'detect-alpaca': "keys 'instruction'/'input' and 'output' in {pct} % of rows (first {n} rows)",
  'detect-alpaca-loose': "key 'instruction' or 'output' in {pct} % of rows (first {n} rows)",
  'detect-text': "key 'text' in {pct} % of rows (pre-training text) (first {n} rows)",
  'detect-unknown-keys':
    'no known format: found keys {keys}; expected alpaca (instruction/input/output), sharegpt (conversations of from/value), OpenAI (messages of role/content) or text, or a dataset_info.json entry with columns',
  'detect-unknown-no-keys':
    'no known format: found keys (none); expected alpaca (instruction/input/output), sharegpt (conversations of from/value), OpenAI (messages of role/content) or text, or a dataset_info.json entry with columns',
  'detect-unknown-strings':
    'no known format: rows are strings; expected alpaca (instruction/input/output), sharegpt (conversations of from/value), OpenAI (messages of role/content) or text, or a dataset_info.json entry with columns',
  'detect-unknown-not-objects':
    'no known format: rows are not objects; expected alpaca (instruction/input/output), sharegpt (conversations of from/value), OpenAI (messages of role/content) or text, or a dataset_info.json entry with columns',

  // dataset_info.json entries (datasetInfo.ts, collection.ts)
  'info-not-object': 'entry is not an object',
  'info-hub-dataset': 'hub/script datasets need a download; only local "file_name" entries are read',
  'info-missing-file-name': 'missing "file_name"',
  'info-unknown-formatting': "unknown formatting '{formatting}'",
  'info-bad-columns': '"columns" must map {keys} to column names',
  'info-bad-tags': '"tags" must map {keys} to strings',
  'info-file-missing': 'file "{file}" is not among the given files',

  // Tokenizing with the chat template (template.ts, encode.ts, pipeline.ts)
  'warn-no-chat-template':
    'the model has no chat_template: using ChatML (<|im_start|>role … <|im_end|>); the fine-tuned model will expect this format',
  'warn-template-ignores-generation-prompt':
    'the chat template ignores add_generation_prompt (it always or never writes the assistant header); check the rendered examples',
  'warn-max-samples': 'max_samples {max}: using the first {used} of {total} rows',
  'warn-search-mode':
    '{n} row(s): the chat template rewrites earlier turns (e.g. drops reasoning from history), so answer spans were located by content rather than by prefix rendering',
  'no-trained-token': 'no trained token left after cutoff_len {cutoff} (the prompt alone fills it)',
  'pretrain-needs-text':
    'pre-training (stage pt) trains on raw text: this row is a conversation; use a text column or a .txt file',
  'warn-pretrain-tail':
    'pre-training: {tokens} tokens make {blocks} blocks of {cutoff}; the last {dropped} tokens do not fill a block and are dropped (as LLaMA-Factory does)',
  'template-error': 'chat template: {message}',
  'template-no-answer': 'chat template: no assistant turn to train on',
  'template-tool-calls-not-rendered':
    'chat template: the chat template does not render tool calls (function_call turn {turn} renders as {rendered})',
  'template-answer-not-verbatim':
    'chat template: the chat template does not render assistant turn {turn} verbatim: cannot locate it for label masking',
} as const satisfies Record<string, string>;

export type DataMessageCode = keyof typeof DATA_MESSAGES;
export type DataMessageParams = Record<string, string | number>;

/** A message as code + parameters: plain data, so it survives structured cloning. `cause` is the
 *  coded form of the `detail` parameter (e.g. the JSON.parse error inside a tools column), so that a
 *  translation can show it in its own language instead of the English `detail`. */
export interface DataMessage {
  code: DataMessageCode;
  params?: DataMessageParams;
  cause?: DataMessage;
}

export const DATA_MESSAGE_CODES = Object.keys(DATA_MESSAGES) as DataMessageCode[];

/** Fills `{name}` slots; a slot without a parameter stays as written. */
export function fillSlots(template: string, params: DataMessageParams = {}): string {
  return template.replace(/\{(\w+)\}/g, (slot, k: string) => (k in params ? String(params[k]) : slot));
}

/** The `{name}` slots a template uses, sorted. */
export function slotsOf(template: string): string[] {
  return [...new Set([...template.matchAll(/\{(\w+)\}/g)].map((m) => m[1]))].sort();
}

export function dataMessage(code: DataMessageCode, params?: DataMessageParams): DataMessage {
  return params ? { code, params } : { code };
}

export function englishText(m: DataMessage): string {
  return fillSlots(DATA_MESSAGES[m.code], m.params);
}

/** English text and its code, ready to spread into an issue. */
export function coded(code: DataMessageCode, params?: DataMessageParams): { reason: string } & DataMessage {
  const m = dataMessage(code, params);
  return { reason: englishText(m), ...m };
}

/** Warnings kept twice in step: English text for the CLI, codes for the studio. */
export interface WarningList {
  warnings: string[];
  warningCodes: DataMessage[];
}

export function addWarning(list: WarningList, code: DataMessageCode, params?: DataMessageParams): void {
  const m = dataMessage(code, params);
  list.warnings.push(englishText(m));
  list.warningCodes.push(m);
}

/** A JSON.parse message without V8's " in JSON at position N (line L column C)", which a report
 *  gives as an absolute line and byte offset instead. */
export function stripJsonPosition(message: string): string {
  return message.replace(/\s+/g, ' ').replace(/ in JSON at position \d+( \(line \d+ column \d+\))?/, '');
}

const JSON_SHAPES: [RegExp, DataMessageCode, string[]][] = [
  [/^Unexpected end of JSON input$/, 'json-unexpected-end', []],
  [/^Unexpected token '(.+?)', (.*) is not valid JSON$/s, 'json-unexpected-token', ['token', 'context']],
  [/^(.*) is not valid JSON$/s, 'json-not-valid', ['context']],
  [/^Unexpected number$/, 'json-unexpected-number', []],
  [/^Unexpected string$/, 'json-unexpected-string', []],
  [/^Expected property name or '\}'$/, 'json-expected-property', []],
  [/^Expected ',' or '\]' after array element$/, 'json-expected-comma-bracket', []],
  [/^Expected ',' or '\}' after property value$/, 'json-expected-comma-brace', []],
  [/^Expected ':' after property name$/, 'json-expected-colon', []],
  [/^Expected double-quoted property name$/, 'json-expected-quoted-name', []],
  [/^Unterminated string$/, 'json-unterminated-string', []],
  [/^Exponent part is missing a number$/, 'json-exponent-missing', []],
  [/^Unterminated fractional number$/, 'json-fraction-unterminated', []],
  [/^No number after minus sign$/, 'json-minus-no-number', []],
  [/^Bad control character in string literal$/, 'json-control-char', []],
  [/^Bad escaped character$/, 'json-bad-escape', []],
  [/^Bad Unicode escape$/, 'json-bad-unicode-escape', []],
  [/^Unexpected non-whitespace character after JSON at position (\d+)$/, 'json-trailing-data', ['position']],
];

/**
 * The code of a JSON.parse error message (position already removed). V8's messages have known
 * shapes; other engines' (Firefox, Safari) fall back to 'bad-json' with the message as `detail`.
 * A shape is used only when it reproduces the English text exactly.
 */
export function jsonErrorMessage(detail: string): DataMessage {
  const text = `bad JSON: ${detail}`;
  for (const [re, code, names] of JSON_SHAPES) {
    const m = re.exec(detail);
    if (!m) continue;
    const params: DataMessageParams = {};
    names.forEach((n, i) => {
      params[n] = m[i + 1];
    });
    const msg = dataMessage(code, names.length ? params : undefined);
    if (englishText(msg) === text) return msg;
  }
  return dataMessage('bad-json', { detail });
}
