// `tabtune chat <config.yaml> --prompt "…"`: answers one prompt through the tokenizer's chat
// template with LLaMA-Factory's inference keys (model_name_or_path, adapter_name_or_path,
// max_new_tokens, do_sample, temperature, top_p, top_k, repetition_penalty), streaming the reply
// to stdout. `do_sample: false` is greedy. Diagnostics go to stderr.
import { chatTemplateFor, type TemplateMessage } from '../data/index.ts';
import {
  CliError,
  folderTokenizer,
  loadAdapterFolder,
  parseYamlArgs,
  requireModelFolder,
  resolvePath,
  stopIdsFor,
  yamlWithOverrides,
  errLine,
  parseCommandArgs,
  runGpuCommand,
  withFolderModel,
} from './common.ts';
import { generate, TextStreamer } from '../engine/generate/generate.ts';
import { parseInferYaml, type InferConfig } from '../engine/train/llamafactory-config.ts';

const USAGE = `usage: tabtune chat <config.yaml> --prompt "…" [key=value ...] [options]

Answers one prompt with the model (and adapter) of a LLaMA-Factory inference YAML, streamed to stdout.

options:
  --prompt TEXT     the user message (required)
  --system TEXT     a system message
  --no-adapter      ignore adapter_name_or_path (the base model's answer, for A/B)
  --seed N          seed of the sampling draws (default 0)
  -h, --help        this help
key=value           overrides a YAML key, e.g. max_new_tokens=64 do_sample=false`;

export interface ChatArgs {
  yamlPath: string;
  config: InferConfig;
  prompt: string;
  system: string | null;
  useAdapter: boolean;
  seed: number;
  warnings: string[];
  notes: string[];
}

/** Parses argv + the YAML; throws CliError / LlamaFactoryConfigError. */
export function parseChatArgs(argv: string[]): ChatArgs | 'help' {
  const a = parseYamlArgs(argv, ['prompt', 'system', 'seed'], 'chat', ['no-adapter']);
  if (a.flags.has('help')) return 'help';
  const prompt = a.flags.get('prompt');
  if (typeof prompt !== 'string' || !prompt.trim()) throw new CliError('--prompt "…" is required');
  const seedRaw = a.flags.get('seed');
  const seed = seedRaw === undefined ? 0 : Number(seedRaw);
  if (!Number.isSafeInteger(seed) || seed < 0)
    throw new CliError(`--seed needs a non-negative integer, got ${String(seedRaw)}`);
  const system = a.flags.get('system');
  const parsed = parseInferYaml(yamlWithOverrides(a.yamlPath, a.overrides), a.yamlPath);
  return {
    yamlPath: a.yamlPath,
    config: parsed.config,
    prompt,
    system: typeof system === 'string' ? system : null,
    useAdapter: !a.flags.has('no-adapter'),
    seed,
    warnings: parsed.warnings,
    notes: parsed.notes,
  };
}

export default async function chat(argv: string[]): Promise<number> {
  const err = errLine;
  const args = parseCommandArgs('chat', USAGE, argv, parseChatArgs);
  if (typeof args === 'number') return args;
  const c = args.config;
  args.warnings.forEach((w) => err(`warning: ${w}`));
  return runGpuCommand('chat', async (openGpu) => {
    const dir = requireModelFolder(
      resolvePath(c.modelNameOrPath, args.yamlPath),
      'model_name_or_path',
      c.modelNameOrPath,
    );
    const tok = await folderTokenizer(dir);
    const g = await openGpu();
    await withFolderModel(g.gpu, dir, {}, async (model) => {
      const lora = args.useAdapter ? await loadAdapterFolder(model, c.adapterNameOrPath, args.yamlPath) : null;
      err(
        `tabtune: ${model.config.architecture} from ${dir}${lora ? ` + adapter ${c.adapterNameOrPath![0]} (r=${lora.config.rank}, ${lora.adapters.size} modules)` : c.adapterNameOrPath && !args.useAdapter ? ' (adapter off: --no-adapter)' : ''}`,
      );
      const tpl = chatTemplateFor(tok);
      tpl.warnings.forEach((w) => err(`warning: ${w}`));
      const messages: TemplateMessage[] = [];
      if (args.system !== null) messages.push({ role: 'system', content: args.system });
      messages.push({ role: 'user', content: args.prompt });
      const promptIds = tok.encode(tpl.renderMessages(messages, { addGenerationPrompt: true }), {
        addSpecialTokens: false,
      });
      const stopIds = stopIdsFor(dir, tok, model.config.eosTokenIds);
      const streamer = new TextStreamer((ids) => tok.decode(ids, { skipSpecialTokens: true }));
      const it = generate(model, lora, promptIds, {
        doSample: c.doSample,
        temperature: c.temperature,
        topP: c.topP,
        topK: c.topK,
        repetitionPenalty: c.repetitionPenalty,
        maxNewTokens: c.maxNewTokens,
        stopIds,
        seed: args.seed,
      });
      let result;
      for (;;) {
        const n = await it.next();
        if (n.done) {
          result = n.value;
          break;
        }
        process.stdout.write(streamer.push(n.value));
      }
      process.stdout.write(`${streamer.flush()}\n`);
      const tps = result.tokens.length / Math.max(1e-3, result.decodeMs / 1000);
      err(
        `tabtune: ${result.promptTokens} prompt tokens (${result.prefillMs.toFixed(0)} ms), ${result.tokens.length} new tokens at ${tps.toFixed(1)} tokens/s, ended by ${result.reason === 'stop' ? 'a stop token' : result.reason === 'length' ? `max_new_tokens (${c.maxNewTokens})` : 'abort'}`,
      );
      lora?.release();
    });
  });
}
