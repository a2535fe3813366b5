// Opening models from the UI (shared by the Model step and the app start-up restore).
import type { ModelState, StudioError } from '../worker/api.ts';
import { guessTemplate } from '../engine/train/method.ts';
import { settings } from './settings.svelte.ts';
import { studio, api } from './studio.svelte.ts';

export const modelCache = $state({ version: 0 });

/** Runs one model-opening call and records its result (a superseded call changes nothing). */
export async function openModelWith(
  f: () => Promise<{ ok: true; value: ModelState } | { ok: false; error: StudioError }>,
): Promise<void> {
  studio.modelBusy = true;
  studio.modelError = null;
  try {
    const r = await f();
    if (!r.ok && r.error.kind === 'superseded') return;
    if (r.ok) {
      studio.model = r.value;
      if (r.value.source === 'local') settings.model.localId = r.value.id;
      if (r.value.config.ok) settings.train.template = guessTemplate(r.value.id, r.value.config.summary.architecture);
    } else studio.modelError = r.error;
  } catch (e) {
    studio.modelError = { kind: 'error', message: (e as Error).message };
  } finally {
    studio.modelBusy = false;
    studio.download = null;
    modelCache.version++;
  }
}

/**
 * At start-up: the demo model when it is the choice (works offline), else the last hub or local
 * model when it is complete in browser storage (never starts a download by itself).
 */
export async function restoreModel(): Promise<void> {
  if (studio.model || studio.modelBusy) return;
  if (settings.model.source === 'demo') return openModelWith(() => api().openDemoModel());
  const c = await api().cachedModels();
  const id = settings.model.source === 'hub' ? settings.model.hubId : `local:${settings.model.localId}`;
  const m = c.models.find((x) => x.modelId === id);
  const complete =
    !!m &&
    !m.partial.length &&
    (settings.model.source === 'local'
      ? m.files.some((f) => f.name === 'config.json')
      : m.files.some((f) => f.name === 'tabtune-download.json'));
  if (complete && !studio.model) await openModelWith(() => api().openStoredModel(id));
}
