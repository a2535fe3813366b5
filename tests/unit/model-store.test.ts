import { describe, expect, it } from 'vitest';
import { MemoryModelStore, modelDirName, ModelStoreError } from '../../src/io/model-store.ts';

describe('MemoryModelStore (the contract OpfsModelStore follows)', () => {
  it('keeps partial bytes, truncates at the resume offset and commits', async () => {
    const s = new MemoryModelStore();
    const w = await s.openPartial('a/b', 'w.safetensors', 0);
    await w.write(new Uint8Array([1, 2, 3, 4]));
    await w.close();
    expect(await s.partialSize('a/b', 'w.safetensors')).toBe(4);
    const w2 = await s.openPartial('a/b', 'w.safetensors', 2);
    await w2.write(new Uint8Array([9]));
    await w2.close();
    expect(await s.get('a/b', 'w.safetensors')).toBeNull();
    await s.commit('a/b', 'w.safetensors');
    expect(new Uint8Array(await (await s.get('a/b', 'w.safetensors'))!.arrayBuffer())).toEqual(
      new Uint8Array([1, 2, 9]),
    );
    expect(await s.partialSize('a/b', 'w.safetensors')).toBe(0);
  });

  it('lists complete and partial files per model and deletes a model', async () => {
    const s = new MemoryModelStore();
    await s.put('x/y', 'config.json', new Uint8Array(10));
    const w = await s.openPartial('x/y', 'model.safetensors', 0);
    await w.write(new Uint8Array(7));
    expect(await s.list()).toEqual([
      { modelId: 'x/y', files: [{ name: 'config.json', size: 10 }], partial: [{ name: 'model.safetensors', size: 7 }] },
    ]);
    await s.delete('x/y');
    expect(await s.list()).toEqual([]);
  });

  it('turns a full disk into a quota error that says what to do', async () => {
    const s = new MemoryModelStore();
    s.quotaBytes = 5;
    const w = await s.openPartial('x/y', 'f', 0);
    const e = await w.write(new Uint8Array(6)).catch((x) => x);
    expect(e).toBeInstanceOf(ModelStoreError);
    expect(e.kind).toBe('quota');
    expect(e.message).toMatch(/delete cached models/);
  });

  it('refuses to commit what was never downloaded', async () => {
    await expect(new MemoryModelStore().commit('x/y', 'f')).rejects.toThrow(/nothing downloaded/);
  });

  it('maps model ids to one folder name and back', () => {
    for (const id of ['Qwen/Qwen2.5-0.5B-Instruct', 'meta-llama/Llama-3.2-1B-Instruct']) {
      expect(modelDirName(id)).not.toContain('/');
      expect(decodeURIComponent(modelDirName(id))).toBe(id);
    }
  });
});
