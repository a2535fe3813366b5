// Pushing exported files to a Hugging Face Hub model repo through @huggingface/hub, which speaks
// the hub's commit API (preupload → LFS batch / xet → NDJSON commit; huggingface.js
// packages/hub/src/lib/commit.ts) against huggingface.co or any endpoint that serves it.
// The token is sent only as the Authorization header the library builds; no message here ever
// contains it.
import { createRepo, HubApiError, uploadFilesWithProgress } from '@huggingface/hub';
import { HUB_ENDPOINT, validateEndpoint } from './hub.ts';

export type HubPushErrorKind = 'hub-auth' | 'hub-forbidden' | 'hub-conflict' | 'hub-bad-input' | 'hub-failed';

export class HubPushError extends Error {
  override readonly name = 'HubPushError';
  constructor(
    readonly kind: HubPushErrorKind,
    message: string,
  ) {
    super(message);
  }
}

export interface PushFile {
  /** Path inside the repo (`model.safetensors`, `adapter_config.json`, …). */
  path: string;
  blob: Blob;
}

export interface PushOptions {
  /** `namespace/name`. */
  repo: string;
  token: string;
  endpoint?: string;
  /** Visibility of a repo this push creates (an existing repo keeps its own). */
  private: boolean;
  /** False: the repo must not exist yet (a name conflict is an error); true: create it or add a commit to it. */
  update: boolean;
  files: PushFile[];
  commitTitle?: string;
  signal?: AbortSignal;
  onProgress?: (p: PushProgress) => void;
}

export interface PushProgress {
  phase: 'creating' | 'preuploading' | 'uploadingLargeFiles' | 'committing' | 'done';
  /** Bytes sent so far (hashing excluded), over all files. */
  bytesDone: number;
  totalBytes: number;
  file: string | null;
}

export interface PushResult {
  repoUrl: string;
  commitUrl: string | null;
  created: boolean;
  files: { path: string; size: number }[];
}

const REPO_PART = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;

/** `namespace/name` as the hub accepts it (huggingface_hub validate_repo_id), or an error naming the problem. */
export function validateRepoName(repo: string): string {
  const r = repo.trim();
  const parts = r.split('/');
  if (parts.length !== 2 || !parts.every((p) => REPO_PART.test(p)) || /\.\.|--/.test(r) || /\.git$/.test(r))
    throw new HubPushError(
      'hub-bad-input',
      `repo "${repo}": must be "your-name/model-name" (letters, digits, '-', '_', '.'; no '--' or '..')`,
    );
  return r;
}

function validateToken(token: string): string {
  const t = token.trim();
  // The library refuses other tokens before any request (huggingface.js checkCredentials).
  if (!/^hf_[A-Za-z0-9]+$/.test(t))
    throw new HubPushError(
      'hub-bad-input',
      'the access token must start with "hf_" (create a write token at huggingface.co/settings/tokens)',
    );
  return t;
}

/** The hub's answer as a message for people; the URL and request id stay, the token never appears. */
function explain(e: unknown, repo: string, endpoint: string, stage: string): HubPushError {
  if (e instanceof HubPushError) return e;
  if (e instanceof HubApiError) {
    const detail = (e.message || `HTTP ${e.statusCode}`).replace(/hf_[A-Za-z0-9]+/g, 'hf_…');
    if (e.statusCode === 401)
      return new HubPushError(
        'hub-auth',
        `${endpoint} rejected the access token (401) while ${stage}: check it, or create a write token; nothing was uploaded. ${detail}`,
      );
    if (e.statusCode === 403)
      return new HubPushError(
        'hub-forbidden',
        `the token may not write to ${repo} (403) while ${stage}: it needs the "write" role on that namespace. ${detail}`,
      );
    if (e.statusCode === 409)
      return new HubPushError(
        'hub-conflict',
        `${repo} already exists on ${endpoint} (409): pick another name, or tick "update an existing repo" to add a commit to it. ${detail}`,
      );
    return new HubPushError('hub-failed', `${endpoint} answered ${e.statusCode} while ${stage} ${repo}: ${detail}`);
  }
  const err = e as Error;
  if (err?.name === 'AbortError') return new HubPushError('hub-failed', `push to ${repo} cancelled`);
  return new HubPushError(
    'hub-failed',
    `could not reach ${endpoint} while ${stage} ${repo}: ${err?.message ?? String(e)}`.replace(
      /hf_[A-Za-z0-9]+/g,
      'hf_…',
    ),
  );
}

/** Creates the repo (private unless told otherwise) when needed and commits `files` to its main branch. */
export async function pushToHub(o: PushOptions): Promise<PushResult> {
  const repo = validateRepoName(o.repo);
  const token = validateToken(o.token);
  const endpoint = validateEndpoint(o.endpoint?.trim() || HUB_ENDPOINT);
  if (!o.files.length) throw new HubPushError('hub-bad-input', 'nothing to push: export a model first');
  const seen = new Set<string>();
  for (const f of o.files) {
    if (!f.path || f.path.startsWith('/') || f.path.split('/').includes('..'))
      throw new HubPushError('hub-bad-input', `file "${f.path}": not a relative path inside the repo`);
    if (seen.has(f.path)) throw new HubPushError('hub-bad-input', `file "${f.path}" is given twice`);
    seen.add(f.path);
  }
  const totalBytes = o.files.reduce((n, f) => n + f.blob.size, 0);
  const sizes = new Map(o.files.map((f) => [f.path, f.blob.size]));
  const sent = new Map<string, number>();
  const report = (phase: PushProgress['phase'], file: string | null = null) =>
    o.onProgress?.({ phase, bytesDone: [...sent.values()].reduce((a, b) => a + b, 0), totalBytes, file });

  report('creating');
  let created = false;
  let repoUrl = `${endpoint}/${repo}`;
  try {
    const r = await createRepo({
      repo: { type: 'model', name: repo },
      accessToken: token,
      hubUrl: endpoint,
      visibility: o.private ? 'private' : 'public',
    });
    created = true;
    repoUrl = r.repoUrl || repoUrl;
  } catch (e) {
    // An existing repo is what "update" asks for (huggingface_hub create_repo(exist_ok=True) does the same).
    if (!(o.update && e instanceof HubApiError && e.statusCode === 409)) throw explain(e, repo, endpoint, 'creating');
  }

  try {
    const it = uploadFilesWithProgress({
      repo: { type: 'model', name: repo },
      accessToken: token,
      hubUrl: endpoint,
      files: o.files.map((f) => ({ path: f.path, content: f.blob })),
      commitTitle: o.commitTitle ?? `Upload ${o.files.length} file${o.files.length > 1 ? 's' : ''} from Tabtune`,
      abortSignal: o.signal,
    });
    let commitUrl: string | null = null;
    for (;;) {
      const n = await it.next();
      if (n.done) {
        commitUrl = n.value?.commit.url ?? null;
        break;
      }
      const ev = n.value;
      if (ev.event === 'phase') report(ev.phase);
      else if (ev.state === 'uploading') {
        sent.set(ev.path, Math.round(ev.progress * (sizes.get(ev.path) ?? 0)));
        report('uploadingLargeFiles', ev.path);
      }
    }
    for (const [p, s] of sizes) sent.set(p, s);
    report('done');
    return { repoUrl, commitUrl, created, files: o.files.map((f) => ({ path: f.path, size: f.blob.size })) };
  } catch (e) {
    throw explain(e, repo, endpoint, 'uploading to');
  }
}
