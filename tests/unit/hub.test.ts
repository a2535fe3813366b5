import { describe, expect, it } from 'vitest';
import {
  downloadFile,
  downloadModel,
  HubError,
  parseContentRange,
  resolveUrl,
  validateEndpoint,
  validateModelId,
  type DownloadProgress,
} from '../../src/io/hub.ts';
import { MemoryModelStore } from '../../src/io/model-store.ts';

// A fake hub: files by name, Range support, optional failures. Records every request.
interface FakeOpts {
  files: Record<string, Uint8Array>;
  ignoreRange?: boolean;
  /** Breaks the body of this file after `bytes` bytes, `times` times. */
  breakAfter?: { file: string; bytes: number; times: number };
  status?: Record<string, number>;
  chunk?: number;
}

function fakeHub(o: FakeOpts) {
  const requests: { url: string; method: string; range: string | null; auth: string | null }[] = [];
  const fetchFn = (async (input: string | URL | Request, init?: RequestInit) => {
    const url = String(input);
    const h = new Headers(init?.headers);
    const method = init?.method ?? 'GET';
    requests.push({ url, method, range: h.get('range'), auth: h.get('authorization') });
    const m = /^https:\/\/huggingface\.co\/([^/]+\/[^/]+)\/resolve\/main\/(.+)$/.exec(url);
    if (!m) return new Response('bad url', { status: 400 });
    const file = decodeURIComponent(m[2]);
    if (o.status?.[file]) return new Response('no', { status: o.status[file] });
    const data = o.files[file];
    if (!data) return new Response('Entry not found', { status: 404 });
    if (method === 'HEAD')
      return new Response(null, { status: 200, headers: { 'content-length': String(data.length) } });
    let start = 0;
    const range = h.get('range');
    if (range && !o.ignoreRange) {
      start = Number(/^bytes=(\d+)-$/.exec(range)![1]);
      if (start >= data.length) return new Response(null, { status: 416 });
    }
    const body = data.subarray(start);
    const chunk = o.chunk ?? 1000;
    let sent = 0;
    const brk = o.breakAfter && o.breakAfter.file === file && o.breakAfter.times > 0 ? o.breakAfter : null;
    if (brk) brk.times--;
    const stream = new ReadableStream<Uint8Array>({
      pull(ctrl) {
        if (init?.signal?.aborted) return ctrl.error(new DOMException('aborted', 'AbortError'));
        if (brk && start + sent >= brk.bytes) return ctrl.error(new TypeError('network connection lost'));
        if (sent >= body.length) return ctrl.close();
        const end = Math.min(body.length, sent + chunk, brk ? Math.max(brk.bytes - start, sent + 1) : Infinity);
        ctrl.enqueue(body.slice(sent, end));
        sent = end;
      },
    });
    const headers: Record<string, string> = { 'content-length': String(body.length) };
    if (start > 0) headers['content-range'] = `bytes ${start}-${data.length - 1}/${data.length}`;
    return new Response(stream, { status: start > 0 ? 206 : 200, headers });
  }) as typeof fetch;
  return { fetch: fetchFn, requests };
}

const bytes = (n: number, seed = 1) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 255);
const json = (x: unknown) => new TextEncoder().encode(JSON.stringify(x));
const ID = 'Org/Tiny-Model';
const baseFiles = () => ({
  'config.json': json({ architectures: ['LlamaForCausalLM'] }),
  'tokenizer.json': json({ model: {} }),
  'tokenizer_config.json': json({}),
});

describe('hub ids and urls', () => {
  it('takes a mirror endpoint (trailing slash dropped) and refuses what is not an http(s) address', async () => {
    expect(validateEndpoint(' https://hf-mirror.com/ ')).toBe('https://hf-mirror.com');
    expect(validateEndpoint('http://127.0.0.1:8080/hub')).toBe('http://127.0.0.1:8080/hub');
    for (const bad of ['', 'hf-mirror.com', 'ftp://x.org', 'https://x.org/?a=1', 'javascript:alert(1)']) {
      expect(() => validateEndpoint(bad), bad).toThrow(HubError);
    }
    expect(resolveUrl('Qwen/Qwen2.5-0.5B', 'config.json', { endpoint: 'https://hf-mirror.com' })).toBe(
      'https://hf-mirror.com/Qwen/Qwen2.5-0.5B/resolve/main/config.json',
    );
    const store = new MemoryModelStore();
    await expect(
      downloadModel('a/b', store, { endpoint: 'hf-mirror.com', fetch: (async () => new Response('')) as typeof fetch }),
    ).rejects.toMatchObject({ kind: 'bad-endpoint' });
  });
  it('builds resolve URLs and rejects ids that are not owner/name', () => {
    expect(resolveUrl('Qwen/Qwen2.5-0.5B-Instruct', 'model.safetensors')).toBe(
      'https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct/resolve/main/model.safetensors',
    );
    expect(resolveUrl('a/b', 'sub dir/x.json', { revision: 'v1.0' })).toBe(
      'https://huggingface.co/a/b/resolve/v1.0/sub%20dir/x.json',
    );
    for (const bad of ['', 'noslash', 'a/b/c', '../x/y', 'https://evil/x'])
      expect(() => validateModelId(bad)).toThrow(HubError);
  });
  it('parses Content-Range', () => {
    expect(parseContentRange('bytes 100-199/200')).toEqual({ start: 100, total: 200 });
    expect(parseContentRange('bytes 5-9/*')).toEqual({ start: 5, total: null });
    expect(parseContentRange('garbage')).toBeNull();
  });
});

describe('downloadFile', () => {
  it('resumes an interrupted download with a Range request and ends with identical bytes', async () => {
    const data = bytes(10_000);
    const hub = fakeHub({
      files: { 'model.safetensors': data },
      breakAfter: { file: 'model.safetensors', bytes: 4_000, times: 1 },
    });
    const store = new MemoryModelStore();
    const err = await downloadFile(ID, 'model.safetensors', store, { fetch: hub.fetch }).catch((e) => e);
    expect(err).toBeInstanceOf(HubError);
    expect(err.kind).toBe('network');
    expect(err.message).toMatch(/retry to resume/);
    expect(await store.partialSize(ID, 'model.safetensors')).toBe(4_000);
    expect(await store.get(ID, 'model.safetensors')).toBeNull();

    const n = await downloadFile(ID, 'model.safetensors', store, { fetch: hub.fetch });
    expect(n).toBe(10_000);
    expect(hub.requests.at(-1)!.range).toBe('bytes=4000-');
    const got = new Uint8Array(await (await store.get(ID, 'model.safetensors'))!.arrayBuffer());
    expect(got).toEqual(data);
    expect(await store.partialSize(ID, 'model.safetensors')).toBe(0);
  });

  it('restarts from zero when the server ignores the range', async () => {
    const data = bytes(5_000, 7);
    const hub = fakeHub({ files: { 'model.safetensors': data }, ignoreRange: true });
    const store = new MemoryModelStore();
    const w = await store.openPartial(ID, 'model.safetensors', 0);
    await w.write(bytes(1_234, 99)); // stale bytes that must not survive
    await w.close();
    await downloadFile(ID, 'model.safetensors', store, { fetch: hub.fetch });
    expect(new Uint8Array(await (await store.get(ID, 'model.safetensors'))!.arrayBuffer())).toEqual(data);
  });

  it('commits a partial file that is already complete (HTTP 416)', async () => {
    const data = bytes(3_000);
    const hub = fakeHub({ files: { 'model.safetensors': data } });
    const store = new MemoryModelStore();
    const w = await store.openPartial(ID, 'model.safetensors', 0);
    await w.write(data);
    await w.close();
    expect(await downloadFile(ID, 'model.safetensors', store, { fetch: hub.fetch })).toBe(3_000);
    expect((await store.get(ID, 'model.safetensors'))!.size).toBe(3_000);
  });

  it('names gated, missing and quota errors with what to do', async () => {
    const store = new MemoryModelStore();
    const gated = fakeHub({ files: {}, status: { 'model.safetensors': 403 } });
    const e1 = await downloadFile(ID, 'model.safetensors', store, { fetch: gated.fetch }).catch((e) => e);
    expect([e1.kind, e1.message]).toEqual(['gated', expect.stringMatching(/access token/)]);
    const e2 = await downloadFile(ID, 'model.safetensors', store, { fetch: fakeHub({ files: {} }).fetch }).catch(
      (e) => e,
    );
    expect([e2.kind, e2.message]).toEqual(['not-found', expect.stringMatching(/check the model id/)]);
    store.quotaBytes = 2_000;
    const e3 = await downloadFile(ID, 'model.safetensors', store, {
      fetch: fakeHub({ files: { 'model.safetensors': bytes(5_000) } }).fetch,
    }).catch((e) => e);
    expect([e3.kind, e3.message]).toEqual(['quota', expect.stringMatching(/quota exceeded/)]);
    const e4 = await downloadFile(ID, 'model.safetensors', store, {
      fetch: (async () => {
        throw new TypeError('Failed to fetch');
      }) as typeof fetch,
    }).catch((e) => e);
    expect(e4.kind).toBe('network');
  });

  it('reports aborts as resumable', async () => {
    const ctl = new AbortController();
    const hub = fakeHub({ files: { 'model.safetensors': bytes(50_000) } });
    const store = new MemoryModelStore();
    const err = await downloadFile(ID, 'model.safetensors', store, {
      fetch: hub.fetch,
      signal: ctl.signal,
      onProgress: (p) => {
        if (p.done >= 10_000) ctl.abort();
      },
    }).catch((e) => e);
    expect(err).toBeInstanceOf(HubError);
    expect(err.kind).toBe('aborted');
    const kept = await store.partialSize(ID, 'model.safetensors');
    expect(kept).toBeGreaterThanOrEqual(10_000);
    expect(kept).toBeLessThan(50_000);
  });
});

describe('downloadModel', () => {
  it('downloads config, tokenizer and every shard of an index once, with progress', async () => {
    const shardA = bytes(6_000, 1);
    const shardB = bytes(4_000, 2);
    const index = {
      metadata: { total_size: 10_000 },
      weight_map: { 'a.weight': 'model-00001-of-00002.safetensors', 'b.weight': 'model-00002-of-00002.safetensors' },
    };
    const hub = fakeHub({
      files: {
        ...baseFiles(),
        'model.safetensors.index.json': json(index),
        'model-00001-of-00002.safetensors': shardA,
        'model-00002-of-00002.safetensors': shardB,
      },
    });
    const store = new MemoryModelStore();
    let t = 0;
    const progress: DownloadProgress[] = [];
    const res = await downloadModel(ID, store, {
      fetch: hub.fetch,
      now: () => (t += 400),
      onProgress: (p) => progress.push(p),
    });
    expect(res.files).toEqual([
      'config.json',
      'tokenizer.json',
      'tokenizer_config.json',
      'model.safetensors.index.json',
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
    ]);
    expect(new Uint8Array(await (await store.get(ID, 'model-00002-of-00002.safetensors'))!.arrayBuffer())).toEqual(
      shardB,
    );
    const last = progress.at(-1)!;
    expect([last.bytesDone, last.bytesTotal, last.fileIndex, last.fileCount]).toEqual([10_000, 10_000, 1, 2]);
    expect(progress.some((p) => p.bytesPerSecond > 0 && p.etaSeconds !== null)).toBe(true);
    for (let i = 1; i < progress.length; i++)
      expect(progress[i].bytesDone).toBeGreaterThanOrEqual(progress[i - 1].bytesDone);

    // Second call: everything comes from the store, nothing is fetched.
    const before = hub.requests.length;
    const again = await downloadModel(ID, store, { fetch: hub.fetch });
    expect(hub.requests.length).toBe(before);
    expect(again.cached).toContain('model-00001-of-00002.safetensors');
  });

  it('falls back to model.safetensors without an index and skips missing optional files', async () => {
    const hub = fakeHub({ files: { ...baseFiles(), 'model.safetensors': bytes(2_000) } });
    const res = await downloadModel(ID, new MemoryModelStore(), { fetch: hub.fetch, token: 'hf_x' });
    expect(res.files).toEqual(['config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors']);
    expect(hub.requests.every((r) => r.auth === 'Bearer hf_x')).toBe(true);
  });

  it('fails on the config before moving weights when the repo is gated', async () => {
    const hub = fakeHub({
      files: { ...baseFiles(), 'model.safetensors': bytes(2_000) },
      status: { 'config.json': 401 },
    });
    const err = await downloadModel(ID, new MemoryModelStore(), { fetch: hub.fetch }).catch((e) => e);
    expect(err.kind).toBe('gated');
    expect(hub.requests.some((r) => r.url.endsWith('model.safetensors'))).toBe(false);
  });

  it('resumes a shard after a broken connection on the next call', async () => {
    const data = bytes(9_000, 5);
    const hub = fakeHub({
      files: { ...baseFiles(), 'model.safetensors': data },
      breakAfter: { file: 'model.safetensors', bytes: 5_000, times: 1 },
    });
    const store = new MemoryModelStore();
    await expect(downloadModel(ID, store, { fetch: hub.fetch })).rejects.toThrow(/resume/);
    const progress: DownloadProgress[] = [];
    await downloadModel(ID, store, { fetch: hub.fetch, onProgress: (p) => progress.push(p) });
    expect(progress[0].bytesDone).toBeGreaterThanOrEqual(5_000);
    expect(new Uint8Array(await (await store.get(ID, 'model.safetensors'))!.arrayBuffer())).toEqual(data);
  });
});
