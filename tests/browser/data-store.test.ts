// IndexedDB storage of dataset files and tokenized results (headless Chromium).
import { expect, test } from 'vitest';
import {
  deleteDatasetFile,
  listDatasetFiles,
  loadDatasetFile,
  loadTokenized,
  openDataStore,
  saveDatasetFile,
  saveTokenized,
  tokenizedKey,
  unflattenExamples,
  type EncodedExample,
} from '../../src/data/index.ts';

const ex = (row: number, n: number): EncodedExample => {
  const inputIds = Int32Array.from({ length: n }, (_, i) => row * 100 + i);
  return {
    row,
    inputIds,
    labels: inputIds.map((v, i) => (i < 2 ? -100 : v)),
    fullLength: n + (row === 1 ? 5 : 0),
    truncated: row === 1,
  };
};

test('a dropped file survives a "reload" (a new store handle) byte for byte', async () => {
  const store = openDataStore(`tabtune-test-${Math.random()}`, 'datasets');
  const text = '{"instruction": "Hi", "output": "Hello"}\n{"instruction": "你好", "output": "您好"}\n';
  const info = await saveDatasetFile(
    new File([text], 'mini.jsonl', { type: 'application/jsonl' }),
    'mini.jsonl',
    store,
  );
  expect(info.id).toMatch(/^file:[0-9a-f]{64}$/);
  const again = await saveDatasetFile(new Blob([text]), 'mini.jsonl', store);
  expect(again.id).toBe(info.id); // content-addressed: stored once
  const list = await listDatasetFiles(store);
  expect(list.map((f) => f.name)).toEqual(['mini.jsonl']);
  const back = await loadDatasetFile(info.id, store);
  expect(await back!.data.text()).toBe(text);
  expect(back!.size).toBe(new Blob([text]).size);
});

test('tokenized results keyed by tokenizer hash + options, round trip exactly, deleted with the file', async () => {
  const store = openDataStore(`tabtune-test-${Math.random()}`, 'datasets');
  const file = await saveDatasetFile(new Blob(['x']), 'x.jsonl', store);
  const opts = { cutoffLen: 512, trainOnPrompt: false, valSize: 0.1, seed: 42 };
  const train = [ex(0, 5), ex(1, 3)],
    val = [ex(2, 4)];
  await saveTokenized(file.id, 'tokhash-a', opts, { train, val }, store);
  const got = await loadTokenized(
    file.id,
    'tokhash-a',
    { seed: 42, valSize: 0.1, trainOnPrompt: false, cutoffLen: 512 },
    store,
  ); // key order irrelevant
  expect(got).toBeDefined();
  expect(got!.train.inputIds).toBeInstanceOf(Int32Array);
  expect(unflattenExamples(got!.train)).toEqual(train);
  expect(unflattenExamples(got!.val)).toEqual(val);
  expect(await loadTokenized(file.id, 'tokhash-b', opts, store)).toBeUndefined();
  expect(await loadTokenized(file.id, 'tokhash-a', { ...opts, cutoffLen: 1024 }, store)).toBeUndefined();
  expect(await tokenizedKey(file.id, 'h', opts)).not.toBe(
    await tokenizedKey(file.id, 'h', { ...opts, maskHistory: true }),
  );
  await deleteDatasetFile(file.id, store);
  expect(await loadDatasetFile(file.id, store)).toBeUndefined();
  expect(await loadTokenized(file.id, 'tokhash-a', opts, store)).toBeUndefined();
});
