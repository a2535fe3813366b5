// A local stand-in for the Hugging Face Hub's write API (the routes @huggingface/hub's createRepo
// and commit call: /api/repos/create, /api/models/{repo}/preupload/{rev}, the git-LFS batch
// endpoint, LFS PUTs and the NDJSON /commit/{rev}), started by a test. It checks what arrives:
// the bearer token, the visibility asked for, every file's size and sha256, and records it all.
// It also serves what was pushed under /{repo}/resolve/main/{file}, as the hub does.
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface StandinRepo {
  visibility: string | null;
  files: Map<string, Uint8Array>;
  commits: { title: string; paths: string[] }[];
}

export interface StandinRequest {
  method: string;
  path: string;
  auth: string | null;
}

export interface HubStandin {
  url: string;
  repos: Map<string, StandinRepo>;
  requests: StandinRequest[];
  /** Problems the stand-in found in what a client sent (bad sizes, hashes, bodies); a test expects none. */
  problems: string[];
  close(): Promise<void>;
}

/** Files the hub stores through LFS in a fresh repo (its default .gitattributes covers these). */
const LFS_FILE = /\.(safetensors|gguf|bin|pt|zip)$/;

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
  });
}

/**
 * `tokens` maps an accepted token to the namespace it may write to; `existing` repos are there
 * before the test (a create for one is a 409, as on the hub).
 */
export async function startHubStandin(o: { tokens: Record<string, string>; existing?: string[] }): Promise<HubStandin> {
  const repos = new Map<string, StandinRepo>();
  for (const r of o.existing ?? []) repos.set(r, { visibility: 'public', files: new Map(), commits: [] });
  const lfs = new Map<string, Uint8Array>();
  const requests: StandinRequest[] = [];
  const problems: string[] = [];
  let base = '';

  const send = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const userOf = (req: IncomingMessage): string | null => {
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    return m ? (o.tokens[m[1]] ?? null) : null;
  };

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', base).pathname;
    const method = req.method ?? 'GET';
    requests.push({ method, path, auth: req.headers.authorization ?? null });
    res.setHeader('access-control-allow-origin', '*');
    res.setHeader('access-control-expose-headers', 'etag, x-request-id');
    if (method === 'OPTIONS') {
      res.writeHead(204, {
        'access-control-allow-methods': 'GET, POST, PUT, OPTIONS',
        'access-control-allow-headers': 'authorization, content-type, accept, x-request-id',
      });
      return void res.end();
    }
    const body = await readBody(req);

    let m = /^\/lfs-upload\/([0-9a-f]{64})$/.exec(path);
    if (m && method === 'PUT') {
      const sha = createHash('sha256').update(body).digest('hex');
      if (sha !== m[1]) problems.push(`LFS PUT ${m[1]}: body hashes to ${sha}`);
      lfs.set(m[1], new Uint8Array(body));
      return void send(res, 200, {});
    }

    // Downloads (what the studio's model and adapter fetches read): public repos for anyone, private ones for their owner.
    m = /^\/([^/]+\/[^/]+)\/resolve\/main\/(.+)$/.exec(path);
    if (m && (method === 'GET' || method === 'HEAD')) {
      const repo = repos.get(m[1]);
      const data = repo?.files.get(decodeURIComponent(m[2]));
      const owner = userOf(req);
      if (!repo || !data || (repo.visibility === 'private' && !m[1].startsWith(`${owner}/`)))
        return void send(res, 404, { error: 'Entry not found' });
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(data.length) });
      return void res.end(method === 'HEAD' ? undefined : data);
    }

    const user = userOf(req);
    if (!user) return void send(res, 401, { error: 'Invalid credentials in Authorization header' });

    if (path === '/api/repos/create' && method === 'POST') {
      const b = JSON.parse(body.toString('utf8')) as {
        name: string;
        organization?: string;
        visibility?: string;
        type?: string;
      };
      const repo = `${b.organization ?? user}/${b.name}`;
      if ((b.type ?? 'model') !== 'model') problems.push(`create ${repo}: type ${b.type}`);
      if ((b.organization ?? user) !== user)
        return void send(res, 403, {
          error: `You don't have the rights to create a model under the namespace "${b.organization}"`,
        });
      if (repos.has(repo))
        return void send(res, 409, { error: 'You already created this model repo', url: `${base}/${repo}` });
      repos.set(repo, { visibility: b.visibility ?? null, files: new Map(), commits: [] });
      return void send(res, 200, { url: `${base}/${repo}`, name: repo });
    }

    m = /^\/api\/models\/([^/]+\/[^/]+)\/preupload\/main$/.exec(path);
    if (m && method === 'POST') {
      if (!repos.has(m[1])) return void send(res, 404, { error: 'Repository not found' });
      const b = JSON.parse(body.toString('utf8')) as { files: { path: string; size: number; sample: string }[] };
      return void send(res, 200, {
        files: b.files.map((f) => ({ path: f.path, uploadMode: LFS_FILE.test(f.path) ? 'lfs' : 'regular' })),
      });
    }

    m = /^\/([^/]+\/[^/]+)\.git\/info\/lfs\/objects\/batch$/.exec(path);
    if (m && method === 'POST') {
      if (!repos.has(m[1])) return void send(res, 404, { error: 'Repository not found' });
      const b = JSON.parse(body.toString('utf8')) as { operation: string; objects: { oid: string; size: number }[] };
      if (b.operation !== 'upload') problems.push(`LFS batch: operation ${b.operation}`);
      return void send(res, 200, {
        transfer: 'basic',
        objects: b.objects.map((x) => ({
          oid: x.oid,
          size: x.size,
          ...(lfs.has(x.oid) ? {} : { actions: { upload: { href: `${base}/lfs-upload/${x.oid}` } } }),
        })),
      });
    }

    m = /^\/api\/models\/([^/]+\/[^/]+)\/commit\/main$/.exec(path);
    if (m && method === 'POST') {
      const repo = repos.get(m[1]);
      if (!repo) return void send(res, 404, { error: 'Repository not found' });
      if (!m[1].startsWith(`${user}/`)) return void send(res, 403, { error: 'You do not have write access' });
      const lines = body
        .toString('utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { key: string; value: Record<string, unknown> });
      let title = '';
      const staged = new Map<string, Uint8Array>();
      for (const l of lines) {
        const v = l.value;
        if (l.key === 'header') title = String(v.summary ?? '');
        else if (l.key === 'file') staged.set(String(v.path), new Uint8Array(Buffer.from(String(v.content), 'base64')));
        else if (l.key === 'lfsFile') {
          const data = lfs.get(String(v.oid));
          if (!data) return void send(res, 400, { error: `LFS object ${v.oid} for ${v.path} was never uploaded` });
          if (data.length !== v.size) problems.push(`${v.path}: committed size ${v.size}, uploaded ${data.length}`);
          staged.set(String(v.path), data);
        } else problems.push(`commit: unknown line ${l.key}`);
      }
      for (const [p, d] of staged) repo.files.set(p, d);
      repo.commits.push({ title, paths: [...staged.keys()] });
      const oid = createHash('sha1').update(body).digest('hex');
      return void send(res, 200, { commitUrl: `${base}/${m[1]}/commit/${oid}`, commitOid: oid });
    }
    send(res, 404, { error: `stand-in: no route ${method} ${path}` });
  }

  const server = createServer((req, res) => {
    route(req, res).catch((e: Error) => {
      problems.push(`${req.method} ${req.url}: ${e.message}`);
      if (!res.headersSent) send(res, 500, { error: e.message });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: base,
    repos,
    requests,
    problems,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
