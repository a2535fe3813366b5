// A trainer Checkpoint as files (what checkpoint-N/ holds besides the PEFT adapter):
// trainer_state.json (counters, config, cursor, parameter layout) + optimizer.safetensors
// (flat f32 arenas: params, exp_avg, exp_avg_sq).
import { bytesSource } from '../../io/byte-source.ts';
import { SafetensorsFile } from '../../io/safetensors.ts';
import { serializeSafetensors } from '../../io/safetensors-writer.ts';
import type { Checkpoint } from './trainer.ts';

export const TRAINER_STATE_FILE = 'trainer_state.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';

function bytesOf(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export async function checkpointToFiles(c: Checkpoint): Promise<Map<string, Uint8Array>> {
  const n = c.params.length;
  const optim = await serializeSafetensors(
    [
      { name: 'params', dtype: 'F32', shape: [n], data: bytesOf(c.params) },
      { name: 'exp_avg', dtype: 'F32', shape: [n], data: bytesOf(c.expAvg) },
      { name: 'exp_avg_sq', dtype: 'F32', shape: [n], data: bytesOf(c.expAvgSq) },
    ],
    { format: c.format },
  );
  const state = new TextEncoder().encode(JSON.stringify({ format: c.format, ...c.state }, null, 2));
  return new Map([
    [TRAINER_STATE_FILE, state],
    [OPTIMIZER_FILE, optim],
  ]);
}

export async function checkpointFromFiles(files: ReadonlyMap<string, Uint8Array>): Promise<Checkpoint> {
  const stateBytes = files.get(TRAINER_STATE_FILE);
  const optimBytes = files.get(OPTIMIZER_FILE);
  if (!stateBytes || !optimBytes) throw new Error(`checkpoint: needs ${TRAINER_STATE_FILE} and ${OPTIMIZER_FILE}`);
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(new TextDecoder().decode(stateBytes)) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${TRAINER_STATE_FILE}: not JSON (${(e as Error).message})`);
  }
  if (raw.format !== 'tabtune-checkpoint-1')
    throw new Error(`${TRAINER_STATE_FILE}: unknown format ${JSON.stringify(raw.format)}`);
  for (const k of ['step', 'microStep'])
    if (!Number.isInteger(raw[k])) throw new Error(`${TRAINER_STATE_FILE}: ${k} must be an integer`);
  if (!Array.isArray(raw.params)) throw new Error(`${TRAINER_STATE_FILE}: params must list the trainable tensors`);
  const f = await SafetensorsFile.open(bytesSource(optimBytes, OPTIMIZER_FILE));
  const read = async (name: string) => {
    const t = await f.readTensor(name);
    if (t.dtype !== 'F32') throw new Error(`${OPTIMIZER_FILE}: ${name} must be F32`);
    return new Float32Array(new Uint8Array(t.bytes).buffer); // a copy even of a Node Buffer (whose slice() is a view)
  };
  const { format: _f, ...state } = raw;
  return {
    format: 'tabtune-checkpoint-1',
    state: state as unknown as Checkpoint['state'],
    params: await read('params'),
    expAvg: await read('exp_avg'),
    expAvgSq: await read('exp_avg_sq'),
  };
}
