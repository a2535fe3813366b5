// The model the studio works on, held by the Worker: its files (Blobs from the demo folder, the
// OPFS cache or a dropped folder), the parsed config.json, the tokenizer and a check of the weights
// against the config. Each part reports its own error so one bad file never hides the others.
import {
  expectedWeights,
  checkWeights,
  parseModelConfig,
  ModelConfigError,
  SUPPORTED_ARCHITECTURES,
  type ModelConfig,
} from '../engine/model/config.ts';
import { openModelFiles, type WeightSource } from '../engine/model/weights.ts';
import { loadTokenizer, type HfTokenizer } from '../data/index.ts';

export type ModelSource = 'demo' | 'hub' | 'local';

export interface PartError {
  kind: 'missing' | 'unsupported' | 'bad-file';
  message: string;
}

export interface ModelSummary {
  architecture: string;
  modelType: string;
  params: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  hidden: number;
  intermediate: number;
  vocab: number;
  maxPositions: number;
  tiedEmbeddings: boolean;
  torchDtype: string | null;
  notes: string[];
}

export interface ModelState {
  id: string;
  source: ModelSource;
  files: { name: string; size: number }[];
  config: { ok: true; summary: ModelSummary; config: ModelConfig } | { ok: false; error: PartError };
  tokenizer:
    | { ok: true; hash: string; hasChatTemplate: boolean; vocab: number; eos: string | null }
    | { ok: false; error: PartError };
  weights: { ok: true; bytes: number; dtypes: string[]; tensors: number } | { ok: false; error: PartError };
}

const base = (p: string) => p.split(/[\\/]/).pop() ?? p;

export function countParams(c: ModelConfig): number {
  let n = 0;
  for (const w of expectedWeights(c)) if (!w.optional) n += w.shape.reduce((a, b) => a * b, 1);
  return n;
}

/**
 * eos_token_id of generation_config.json (one id or a list), which transformers' generate stops
 * on: Phi-3.5 / Phi-4-mini end a turn with <|end|> there, not with the tokenizer's <|endoftext|>.
 * Unreadable or absent: none.
 */
export function generationEosIds(text: string): number[] {
  try {
    const g = JSON.parse(text) as { eos_token_id?: unknown };
    const ids = Array.isArray(g.eos_token_id) ? g.eos_token_id : [g.eos_token_id];
    return ids.filter((id): id is number => Number.isSafeInteger(id) && (id as number) >= 0);
  } catch {
    return [];
  }
}

export class ModelSession {
  tokenizer: HfTokenizer | null = null;
  config: ModelConfig | null = null;
  weights: WeightSource | null = null;
  /** generation_config.json's eos ids (generationEosIds): replies stop on them too. */
  generationEos: number[] = [];
  constructor(
    readonly id: string,
    readonly source: ModelSource,
    readonly files: Map<string, Blob>,
    readonly state: ModelState,
  ) {}

  file(name: string): Blob | undefined {
    return this.files.get(name);
  }

  /** Tokenizer and config files as bytes (export writes them next to merged weights). */
  async sideFiles(): Promise<Map<string, Uint8Array>> {
    const out = new Map<string, Uint8Array>();
    for (const [name, blob] of this.files)
      if (!/\.safetensors$/.test(name) && !name.endsWith('.index.json'))
        out.set(name, new Uint8Array(await blob.arrayBuffer()));
    return out;
  }
}

/** Opens a model from named files; never throws for bad files (the state says what is wrong). */
export async function openModel(id: string, source: ModelSource, given: Map<string, Blob>): Promise<ModelSession> {
  const files = new Map<string, Blob>();
  for (const [p, b] of given) files.set(base(p), b);
  const state: ModelState = {
    id,
    source,
    files: [...files].map(([name, b]) => ({ name, size: b.size })).sort((a, b) => a.name.localeCompare(b.name)),
    config: {
      ok: false,
      error: {
        kind: 'missing',
        message:
          'config.json is missing: a model folder needs config.json, tokenizer.json, tokenizer_config.json and *.safetensors',
      },
    },
    tokenizer: {
      ok: false,
      error: { kind: 'missing', message: 'tokenizer.json or tokenizer_config.json is missing from the model folder' },
    },
    weights: {
      ok: false,
      error: {
        kind: 'missing',
        message: 'no model.safetensors (or model.safetensors.index.json with its shards) in the model folder',
      },
    },
  };
  const session = new ModelSession(id, source, files, state);

  const cfg = files.get('config.json');
  if (cfg) {
    try {
      const config = parseModelConfig(await cfg.text(), 'config.json');
      session.config = config;
      state.config = {
        ok: true,
        config,
        summary: {
          architecture: config.architecture,
          modelType: config.modelType,
          params: countParams(config),
          layers: config.numLayers,
          heads: config.numHeads,
          kvHeads: config.numKvHeads,
          headDim: config.headDim,
          hidden: config.hiddenSize,
          intermediate: config.intermediateSize,
          vocab: config.vocabSize,
          maxPositions: config.maxPositionEmbeddings,
          tiedEmbeddings: config.tieWordEmbeddings,
          torchDtype: config.torchDtype,
          notes: config.notes,
        },
      };
    } catch (e) {
      const msg = (e as Error).message;
      const unsupported = e instanceof ModelConfigError && e.field === 'architectures';
      state.config = {
        ok: false,
        error: {
          kind: unsupported ? 'unsupported' : 'bad-file',
          message: unsupported
            ? `${msg}. Tabtune runs ${SUPPORTED_ARCHITECTURES.join(', ')}; pick one of the listed models or a fine-tune of them.`
            : msg,
        },
      };
    }
  }

  const gc = files.get('generation_config.json');
  if (gc) session.generationEos = generationEosIds(await gc.text());

  const tj = files.get('tokenizer.json');
  const tc = files.get('tokenizer_config.json');
  if (tj && tc) {
    try {
      const text = await tj.text();
      const tok = await loadTokenizer(text, await tc.text(), { tokenizerJsonText: text });
      session.tokenizer = tok;
      state.tokenizer = {
        ok: true,
        hash: tok.hash,
        hasChatTemplate: tok.chatTemplate !== null,
        vocab: tok.vocabSize,
        eos: tok.eos?.content ?? null,
      };
    } catch (e) {
      state.tokenizer = { ok: false, error: { kind: 'bad-file', message: `tokenizer: ${(e as Error).message}` } };
    }
  }

  if (session.config && (files.has('model.safetensors') || files.has('model.safetensors.index.json'))) {
    try {
      const opened = await openModelFiles(files);
      const src = opened.source;
      const names = src.names();
      const check = checkWeights(session.config, new Map(names.map((n) => [n, src.shape(n)])));
      if (check.problems.length) {
        state.weights = {
          ok: false,
          error: {
            kind: 'bad-file',
            message: `the weights do not match config.json: ${check.problems.slice(0, 5).join('; ')}${check.problems.length > 5 ? ` (+${check.problems.length - 5} more)` : ''}`,
          },
        };
      } else {
        session.weights = src;
        let bytes = 0;
        for (const [n, b] of files) if (n.endsWith('.safetensors')) bytes += b.size;
        state.weights = {
          ok: true,
          bytes,
          dtypes: [...new Set(names.map((n) => src.dtype(n)))],
          tensors: names.length,
        };
      }
    } catch (e) {
      state.weights = { ok: false, error: { kind: 'bad-file', message: (e as Error).message } };
    }
  }
  return session;
}
