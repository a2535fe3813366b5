// Hugging Face Hub downloads: files are fetched from `<endpoint>/<id>/resolve/<revision>/<file>`
// (huggingface_hub `file_download.py` hf_hub_url), sharded weights found through
// `model.safetensors.index.json` (transformers `modeling_utils.py`), and interrupted downloads
// resumed with an HTTP Range request from the bytes already stored (model-store.ts).
import { parseIndex, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME } from './safetensors-index.ts';
import { ModelStoreError, storeError, type ModelStore } from './model-store.ts';

export const HUB_ENDPOINT = 'https://huggingface.co';

/** Small instruct models that fit a browser GPU, smallest first. */
export const HUB_MODELS = [
  { id: 'HuggingFaceTB/SmolLM2-135M-Instruct', params: '135M', architecture: 'LlamaForCausalLM' },
  { id: 'HuggingFaceTB/SmolLM2-360M-Instruct', params: '360M', architecture: 'LlamaForCausalLM' },
  { id: 'Qwen/Qwen2.5-0.5B-Instruct', params: '0.5B', architecture: 'Qwen2ForCausalLM' },
  { id: 'Qwen/Qwen2.5-1.5B-Instruct', params: '1.5B', architecture: 'Qwen2ForCausalLM' },
  { id: 'google/gemma-3-270m-it', params: '268M', architecture: 'Gemma3ForCausalLM' },
  { id: 'google/gemma-3-1b-it', params: '1.0B', architecture: 'Gemma3ForCausalLM' },
  { id: 'meta-llama/Llama-3.2-1B-Instruct', params: '1.2B', architecture: 'LlamaForCausalLM' },
  { id: 'google/gemma-2-2b-it', params: '2.6B', architecture: 'Gemma2ForCausalLM' },
  { id: 'HuggingFaceTB/SmolLM3-3B', params: '3.1B', architecture: 'SmolLM3ForCausalLM' },
  { id: 'microsoft/Phi-3.5-mini-instruct', params: '3.8B', architecture: 'Phi3ForCausalLM' },
  { id: 'microsoft/Phi-4-mini-instruct', params: '3.8B', architecture: 'Phi3ForCausalLM' },
] as const;

/** Files a model needs besides its weights; the optional ones are skipped when the repo lacks them. */
export const REQUIRED_FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json'] as const;
export const OPTIONAL_FILES = ['generation_config.json', 'special_tokens_map.json'] as const;

export type HubErrorKind =
  | 'bad-id'
  | 'bad-endpoint'
  | 'not-found'
  | 'gated'
  | 'network'
  | 'http'
  | 'aborted'
  | 'bad-response'
  | 'quota'
  | 'storage';

export class HubError extends Error {
  override readonly name = 'HubError';
  constructor(
    readonly kind: HubErrorKind,
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
  }
}

export interface HubOptions {
  fetch?: typeof fetch;
  endpoint?: string;
  revision?: string;
  signal?: AbortSignal;
  /** Access token for gated repos (Llama). Sent only to the hub endpoint. */
  token?: string;
}

const ID_RE = /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/;

export function validateModelId(id: string): string {
  const trimmed = id.trim();
  if (!ID_RE.test(trimmed) || trimmed.includes('..')) {
    throw new HubError(
      'bad-id',
      trimmed || '<empty>',
      'a model id looks like "owner/name", e.g. "Qwen/Qwen2.5-0.5B-Instruct"',
    );
  }
  return trimmed;
}

/** An endpoint as the user typed it → its origin and path without a trailing slash, or a 'bad-endpoint' error. */
export function validateEndpoint(endpoint: string): string {
  const trimmed = endpoint.trim().replace(/\/+$/, '');
  let url: URL | null = null;
  try {
    url = new URL(trimmed);
  } catch {
    url = null;
  }
  if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:') || url.search || url.hash) {
    throw new HubError(
      'bad-endpoint',
      trimmed || '<empty>',
      'a hub endpoint is an http(s) address such as https://huggingface.co or https://hf-mirror.com',
    );
  }
  return trimmed;
}

export function resolveUrl(id: string, file: string, o: Pick<HubOptions, 'endpoint' | 'revision'> = {}): string {
  const path = file.split('/').map(encodeURIComponent).join('/');
  return `${o.endpoint ?? HUB_ENDPOINT}/${validateModelId(id)}/resolve/${encodeURIComponent(o.revision ?? 'main')}/${path}`;
}

function headers(o: HubOptions, extra: Record<string, string> = {}): Record<string, string> {
  return o.token ? { ...extra, Authorization: `Bearer ${o.token}` } : extra;
}

function httpError(status: number, id: string, file: string): HubError {
  if (status === 401 || status === 403) {
    return new HubError(
      'gated',
      file,
      `the hub refused access (HTTP ${status}): "${id}" is gated or private — accept its licence on huggingface.co and paste an access token, or pick another model`,
    );
  }
  if (status === 404)
    return new HubError(
      'not-found',
      file,
      `"${id}" has no file ${file} (HTTP 404): check the model id — a private repo answers 404 too until its owner's access token is given`,
    );
  if (status === 416)
    return new HubError(
      'http',
      file,
      'the server rejected the resume position (HTTP 416); the partial file is discarded, retry to download it again',
    );
  return new HubError('http', file, `the hub answered HTTP ${status}; retry later`);
}

async function doFetch(o: HubOptions, url: string, init: RequestInit, file: string): Promise<Response> {
  const f = o.fetch ?? globalThis.fetch;
  try {
    return await f(url, { ...init, signal: o.signal });
  } catch (e) {
    if (o.signal?.aborted || (e as Error)?.name === 'AbortError')
      throw new HubError('aborted', file, 'download stopped; start it again to resume');
    throw new HubError(
      'network',
      file,
      `network error (${(e as Error)?.message ?? e}): check your connection and retry — finished bytes are kept`,
    );
  }
}

/** Fetches a small file whole (config, tokenizer); null on 404 when `optional`. */
export async function fetchSmallFile(
  id: string,
  file: string,
  o: HubOptions = {},
  optional = false,
): Promise<Uint8Array | null> {
  const res = await doFetch(o, resolveUrl(id, file, o), { headers: headers(o) }, file);
  if (res.status === 404 && optional) return null;
  if (!res.ok) throw httpError(res.status, id, file);
  return new Uint8Array(await res.arrayBuffer());
}

export interface WeightFiles {
  /** The safetensors files to download, in order. */
  shards: string[];
  /** Text of model.safetensors.index.json when the checkpoint is sharded. */
  indexText: string | null;
}

/** The weight files of a repo: the shards named by the index when there is one, else model.safetensors. */
export async function resolveWeightFiles(id: string, o: HubOptions = {}): Promise<WeightFiles> {
  const index = await fetchSmallFile(id, SAFE_WEIGHTS_INDEX_NAME, o, true);
  if (!index) return { shards: [SAFE_WEIGHTS_NAME], indexText: null };
  const text = new TextDecoder().decode(index);
  let parsed;
  try {
    parsed = parseIndex(text, SAFE_WEIGHTS_INDEX_NAME);
  } catch (e) {
    throw new HubError('bad-response', SAFE_WEIGHTS_INDEX_NAME, (e as Error).message);
  }
  return { shards: parsed.shards, indexText: text };
}

/** Size of a file from a HEAD request (the hub redirects LFS files to its CDN); null when unknown. */
export async function remoteSize(id: string, file: string, o: HubOptions = {}): Promise<number | null> {
  const res = await doFetch(o, resolveUrl(id, file, o), { method: 'HEAD', headers: headers(o) }, file);
  if (!res.ok) throw httpError(res.status, id, file);
  const n = Number(res.headers.get('x-linked-size') ?? res.headers.get('content-length'));
  return Number.isFinite(n) && n > 0 ? n : null;
}

/** Total size from `Content-Range: bytes a-b/total`. */
export function parseContentRange(v: string | null): { start: number; total: number | null } | null {
  const m = v ? /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(v.trim()) : null;
  return m ? { start: Number(m[1]), total: m[2] === '*' ? null : Number(m[2]) } : null;
}

export interface FileProgress {
  file: string;
  /** Bytes of this file stored so far (resumed bytes included). */
  done: number;
  total: number | null;
  /** Bytes received over the network in this call (not counting resumed ones). */
  received: number;
}

/** How much to write before making it durable, so a crash loses at most this much. */
const FLUSH_BYTES = 8 << 20;

/**
 * Downloads `file` into the store, resuming from a partial file with `Range: bytes=N-`.
 * A server that ignores the range (HTTP 200) restarts the file from zero.
 */
export async function downloadFile(
  id: string,
  file: string,
  store: ModelStore,
  o: HubOptions & { onProgress?: (p: FileProgress) => void } = {},
): Promise<number> {
  let offset = await store.partialSize(id, file);
  const h = headers(o, offset > 0 ? { Range: `bytes=${offset}-` } : {});
  const res = await doFetch(o, resolveUrl(id, file, o), { headers: h }, file);
  if (res.status === 416 && offset > 0) {
    // What we hold is already the whole file (or the remote changed): check the size and restart if needed.
    const size = await remoteSize(id, file, o);
    if (size === offset) {
      await store.commit(id, file);
      return offset;
    }
    const w = await store.openPartial(id, file, 0);
    await w.close();
    return downloadFile(id, file, store, o);
  }
  if (!res.ok) throw httpError(res.status, id, file);
  let total: number | null;
  if (res.status === 206) {
    const cr = parseContentRange(res.headers.get('content-range'));
    if (!cr || cr.start !== offset)
      throw new HubError(
        'bad-response',
        file,
        `the server resumed at the wrong place (Content-Range "${res.headers.get('content-range')}", expected start ${offset}); retry`,
      );
    total = cr.total;
  } else {
    offset = 0;
    const len = Number(res.headers.get('content-length'));
    total = Number.isFinite(len) && len > 0 ? len : null;
  }
  if (!res.body) throw new HubError('bad-response', file, 'the response has no body');
  let writer;
  try {
    writer = await store.openPartial(id, file, offset);
  } catch (e) {
    throw asHubError(e, file);
  }
  let done = offset;
  let received = 0;
  let sinceFlush = 0;
  const reader = res.body.getReader();
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        if (o.signal?.aborted || (e as Error)?.name === 'AbortError')
          throw new HubError('aborted', file, 'download stopped; start it again to resume');
        throw new HubError(
          'network',
          file,
          `the connection broke after ${done} bytes (${(e as Error)?.message ?? e}); retry to resume from there`,
        );
      }
      if (chunk.done) break;
      await writer.write(chunk.value);
      done += chunk.value.byteLength;
      received += chunk.value.byteLength;
      sinceFlush += chunk.value.byteLength;
      if (sinceFlush >= FLUSH_BYTES) {
        await writer.flush();
        sinceFlush = 0;
      }
      o.onProgress?.({ file, done, total, received });
    }
  } catch (e) {
    await writer.close().catch(() => {});
    throw asHubError(e, file);
  }
  await writer.close();
  if (total !== null && done !== total) {
    throw new HubError('network', file, `the download ended early (${done} of ${total} bytes); retry to resume`);
  }
  await store.commit(id, file);
  return done;
}

function asHubError(e: unknown, file: string): HubError {
  if (e instanceof HubError) return e;
  const se = e instanceof ModelStoreError ? e : storeError(e, file);
  return new HubError(se.kind === 'quota' ? 'quota' : 'storage', file, se.message);
}

/** Written last: the list of files of a complete download. */
export const MANIFEST = 'tabtune-download.json';

export interface DownloadProgress {
  modelId: string;
  file: string;
  fileIndex: number;
  fileCount: number;
  /** Bytes stored across all files (cached and resumed ones included). */
  bytesDone: number;
  /** Sum of known file sizes; null while some size is unknown. */
  bytesTotal: number | null;
  /** Network speed in bytes/s (moving average), 0 before the first second. */
  bytesPerSecond: number;
  /** Seconds left at the current speed, or null. */
  etaSeconds: number | null;
}

export interface DownloadResult {
  modelId: string;
  files: string[];
  /** Files that were already in the store. */
  cached: string[];
}

/** Downloads config, tokenizer and weights of `id` into the store; files already there are skipped. */
export async function downloadModel(
  id: string,
  store: ModelStore,
  o: HubOptions & { onProgress?: (p: DownloadProgress) => void; now?: () => number } = {},
): Promise<DownloadResult> {
  const modelId = validateModelId(id);
  if (o.endpoint !== undefined) o = { ...o, endpoint: validateEndpoint(o.endpoint) };
  const now = o.now ?? (() => performance.now());
  const cached: string[] = [];
  const files: string[] = [];

  // A finished download leaves a manifest: with every file still there, nothing goes to the network.
  const manifest = await store.get(modelId, MANIFEST);
  if (manifest) {
    const listed = (JSON.parse(await manifest.text()) as { files: string[] }).files;
    const present = await Promise.all(listed.map((f) => store.get(modelId, f)));
    if (present.every((b) => b !== null)) return { modelId, files: listed, cached: listed };
  }

  // Small files first: a wrong id or a gated repo fails before gigabytes move.
  for (const f of [...REQUIRED_FILES, ...OPTIONAL_FILES]) {
    const optional = (OPTIONAL_FILES as readonly string[]).includes(f);
    if (await store.get(modelId, f)) {
      cached.push(f);
      files.push(f);
      continue;
    }
    const bytes = await fetchSmallFile(modelId, f, o, optional);
    if (!bytes) continue;
    try {
      await store.put(modelId, f, bytes);
    } catch (e) {
      throw asHubError(e, f);
    }
    files.push(f);
  }

  let weights: WeightFiles;
  const storedIndex = await store.get(modelId, SAFE_WEIGHTS_INDEX_NAME);
  if (storedIndex) {
    const text = await storedIndex.text();
    weights = { shards: parseIndex(text).shards, indexText: text };
    cached.push(SAFE_WEIGHTS_INDEX_NAME);
  } else {
    weights = await resolveWeightFiles(modelId, o);
    if (weights.indexText !== null)
      await store.put(modelId, SAFE_WEIGHTS_INDEX_NAME, new TextEncoder().encode(weights.indexText)).catch((e) => {
        throw asHubError(e, SAFE_WEIGHTS_INDEX_NAME);
      });
  }
  if (weights.indexText !== null) files.push(SAFE_WEIGHTS_INDEX_NAME);

  const sizes = new Map<string, number | null>();
  const storedSize = new Map<string, number>();
  for (const s of weights.shards) {
    const have = await store.get(modelId, s);
    if (have) {
      sizes.set(s, have.size);
      storedSize.set(s, have.size);
      continue;
    }
    storedSize.set(s, await store.partialSize(modelId, s));
    sizes.set(
      s,
      await remoteSize(modelId, s, o).catch((e) => {
        if (e instanceof HubError && (e.kind === 'gated' || e.kind === 'not-found' || e.kind === 'aborted')) throw e;
        return null;
      }),
    );
  }
  const totalOf = () =>
    [...sizes.values()].every((v) => v !== null) ? [...sizes.values()].reduce((a, b) => a! + b!, 0)! : null;
  const doneOf = () => [...storedSize.values()].reduce((a, b) => a + b, 0);

  let speed = 0;
  let windowStart = now();
  let windowBytes = 0;
  weights.shards.forEach((s) => files.push(s));
  for (let i = 0; i < weights.shards.length; i++) {
    const s = weights.shards[i];
    const report = () => {
      const total = totalOf();
      const doneBytes = doneOf();
      o.onProgress?.({
        modelId,
        file: s,
        fileIndex: i,
        fileCount: weights.shards.length,
        bytesDone: doneBytes,
        bytesTotal: total,
        bytesPerSecond: speed,
        etaSeconds: total !== null && speed > 0 ? (total - doneBytes) / speed : null,
      });
    };
    if (await store.get(modelId, s)) {
      cached.push(s);
      report();
      continue;
    }
    let lastReceived = 0;
    await downloadFile(modelId, s, store, {
      ...o,
      onProgress: (p) => {
        storedSize.set(s, p.done);
        if (p.total !== null) sizes.set(s, p.total);
        windowBytes += p.received - lastReceived;
        lastReceived = p.received;
        const t = now();
        if (t - windowStart >= 1000) {
          const inst = (windowBytes * 1000) / (t - windowStart);
          speed = speed === 0 ? inst : 0.7 * speed + 0.3 * inst;
          windowStart = t;
          windowBytes = 0;
        }
        report();
      },
    });
    report();
  }
  await store
    .put(modelId, MANIFEST, new TextEncoder().encode(JSON.stringify({ files, at: new Date().toISOString() })))
    .catch((e) => {
      throw asHubError(e, MANIFEST);
    });
  return { modelId, files, cached };
}
