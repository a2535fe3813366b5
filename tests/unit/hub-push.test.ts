// Pushing to the hub through @huggingface/hub, against the local stand-in of its write API.
import { createHash } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pushToHub, validateRepoName, HubPushError, type PushProgress } from '../../src/io/hub-push.ts';
import { startHubStandin, type HubStandin } from '../hub-standin/server.ts';

const TOKEN = 'hf_alicewritetoken0123';
const bytes = (n: number, seed: number) => new Uint8Array(n).map((_, i) => (i * 31 + seed) & 255);

describe('pushToHub', () => {
  let hub: HubStandin;
  beforeEach(async () => {
    hub = await startHubStandin({ tokens: { [TOKEN]: 'alice' }, existing: ['alice/taken'] });
  });
  afterEach(async () => {
    await hub.close();
  });

  it('creates a private repo and uploads every file (LFS for the weights) with the token as a bearer header', async () => {
    const weights = bytes(300_001, 1);
    const config = new TextEncoder().encode('{"r": 8}\n');
    const seen: PushProgress[] = [];
    const r = await pushToHub({
      repo: 'alice/tiny-lora',
      token: TOKEN,
      endpoint: hub.url,
      private: true,
      update: false,
      files: [
        { path: 'adapter_model.safetensors', blob: new Blob([weights]) },
        { path: 'adapter_config.json', blob: new Blob([config]) },
      ],
      onProgress: (p) => seen.push(p),
    });
    expect(hub.problems).toEqual([]);
    const repo = hub.repos.get('alice/tiny-lora')!;
    expect(repo.visibility).toBe('private');
    expect(repo.files.get('adapter_model.safetensors')).toEqual(weights);
    expect(repo.files.get('adapter_config.json')).toEqual(config);
    expect(repo.commits).toHaveLength(1);
    // The weights went through the LFS batch API and a PUT of exactly their bytes.
    const sha = createHash('sha256').update(weights).digest('hex');
    expect(hub.requests.some((q) => q.method === 'PUT' && q.path === `/lfs-upload/${sha}`)).toBe(true);
    // Every API call carried the token; nothing else saw it.
    for (const q of hub.requests.filter((q) => !q.path.startsWith('/lfs-upload/')))
      expect(q.auth, `${q.method} ${q.path}`).toBe(`Bearer ${TOKEN}`);
    expect(hub.requests.filter((q) => q.path.startsWith('/lfs-upload/')).every((q) => q.auth === null)).toBe(true);
    expect(r.created).toBe(true);
    expect(r.repoUrl).toBe(`${hub.url}/alice/tiny-lora`);
    expect(r.commitUrl).toMatch(/\/alice\/tiny-lora\/commit\/[0-9a-f]{40}$/);
    expect(r.files).toEqual([
      { path: 'adapter_model.safetensors', size: weights.length },
      { path: 'adapter_config.json', size: config.length },
    ]);
    expect(seen[0].phase).toBe('creating');
    expect(seen.at(-1)).toEqual({
      phase: 'done',
      bytesDone: weights.length + config.length,
      totalBytes: weights.length + config.length,
      file: null,
    });
    expect(seen.map((p) => p.phase)).toEqual(
      expect.arrayContaining(['preuploading', 'uploadingLargeFiles', 'committing']),
    );
  });

  it('a public push asks for a public repo', async () => {
    await pushToHub({
      repo: 'alice/open',
      token: TOKEN,
      endpoint: hub.url,
      private: false,
      update: false,
      files: [{ path: 'README.md', blob: new Blob(['# open\n']) }],
    });
    expect(hub.repos.get('alice/open')!.visibility).toBe('public');
  });

  it('a rejected token is a clear 401 message without the token, and nothing is created', async () => {
    const bad = 'hf_wrongtoken999';
    const err = await pushToHub({
      repo: 'alice/x',
      token: bad,
      endpoint: hub.url,
      private: true,
      update: false,
      files: [{ path: 'a.json', blob: new Blob(['{}']) }],
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HubPushError);
    expect((err as HubPushError).kind).toBe('hub-auth');
    expect((err as Error).message).toMatch(/rejected the access token \(401\)/);
    expect((err as Error).message).not.toContain(bad);
    expect(hub.repos.has('alice/x')).toBe(false);
  });

  it('a name conflict (409) is a clear message; with update it commits to the existing repo instead', async () => {
    const files = [{ path: 'model.safetensors', blob: new Blob([bytes(1000, 2)]) }];
    const err = await pushToHub({
      repo: 'alice/taken',
      token: TOKEN,
      endpoint: hub.url,
      private: true,
      update: false,
      files,
    }).catch((e: unknown) => e);
    expect((err as HubPushError).kind).toBe('hub-conflict');
    expect((err as Error).message).toMatch(/alice\/taken already exists .*\(409\).*update an existing repo/);
    expect(hub.repos.get('alice/taken')!.files.size).toBe(0);

    const r = await pushToHub({
      repo: 'alice/taken',
      token: TOKEN,
      endpoint: hub.url,
      private: true,
      update: true,
      files,
    });
    expect(r.created).toBe(false);
    expect(hub.repos.get('alice/taken')!.files.get('model.safetensors')).toEqual(bytes(1000, 2));
    // The existing repo keeps its visibility.
    expect(hub.repos.get('alice/taken')!.visibility).toBe('public');
    expect(hub.problems).toEqual([]);
  });

  it('writing to another namespace is a 403 message', async () => {
    const err = await pushToHub({
      repo: 'bob/model',
      token: TOKEN,
      endpoint: hub.url,
      private: true,
      update: false,
      files: [{ path: 'a.json', blob: new Blob(['{}']) }],
    }).catch((e: unknown) => e);
    expect((err as HubPushError).kind).toBe('hub-forbidden');
    expect((err as Error).message).toMatch(/may not write to bob\/model \(403\)/);
  });

  it('refuses bad input before any request', async () => {
    const files = [{ path: 'a.json', blob: new Blob(['{}']) }];
    const go = (o: Partial<Parameters<typeof pushToHub>[0]>) =>
      pushToHub({ repo: 'alice/m', token: TOKEN, endpoint: hub.url, private: true, update: false, files, ...o }).catch(
        (e: Error) => e.message,
      );
    expect(await go({ token: 'secret' })).toMatch(/must start with "hf_"/);
    expect(await go({ repo: 'no-namespace' })).toMatch(/must be "your-name\/model-name"/);
    expect(await go({ files: [] })).toMatch(/nothing to push/);
    expect(await go({ files: [...files, ...files] })).toMatch(/"a.json" is given twice/);
    expect(await go({ files: [{ path: '../x', blob: new Blob(['']) }] })).toMatch(/not a relative path/);
    expect(await go({ endpoint: 'ftp://x' })).toMatch(/http\(s\) address/);
    expect(hub.requests).toEqual([]);
    expect(validateRepoName(' alice/m-1.5 ')).toBe('alice/m-1.5');
    expect(() => validateRepoName('alice/a--b')).toThrow(/no '--'/);
  });
});
