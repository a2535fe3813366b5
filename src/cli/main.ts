export {};
// Dispatches `tabtune <command>` to src/cli/<command>.ts, whose default export is
// `(argv: string[]) => Promise<number>` (the exit code).
const COMMANDS: Record<string, string> = {
  data: 'validate a dataset and print its report and token statistics',
  train: 'LoRA / QLoRA / full SFT from a LLaMA-Factory YAML',
  export: 'merge an adapter into the base model (LLaMA-Factory export keys)',
  chat: 'answer one prompt through the chat template',
};

function usage(): string {
  return [
    'usage: tabtune <command> [args]',
    '',
    ...Object.entries(COMMANDS).map(([c, d]) => `  ${c.padEnd(8)} ${d}`),
  ].join('\n');
}

const [cmd, ...rest] = process.argv.slice(2);
if (!cmd || cmd === '--help' || cmd === '-h') {
  console.log(usage());
  process.exit(cmd ? 0 : 2);
}
if (!(cmd in COMMANDS)) {
  console.error(`tabtune: unknown command "${cmd}"\n\n${usage()}`);
  process.exit(2);
}
let mod: { default: (argv: string[]) => Promise<number> };
try {
  mod = await import(`./${cmd}.ts`);
} catch (e) {
  console.error(`tabtune ${cmd}: not available in this build (${(e as Error).message})`);
  process.exit(2);
}
process.exitCode = await mod.default(rest);
