// Layers import downward only (.dependency-cruiser.cjs): a violation fails the suite and the
// message names the importing file, the imported file and the rule.
import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cruise, type ICruiseResult } from 'dependency-cruiser';
import extractDepcruiseConfig from 'dependency-cruiser/config-utl/extract-depcruise-config';

const config = await extractDepcruiseConfig(join(process.cwd(), '.dependency-cruiser.cjs'));

async function violations(dirs: string[], baseDir?: string): Promise<string[]> {
  const options = {
    ...config.options,
    ruleSet: { forbidden: config.forbidden },
    validate: true,
    ...(baseDir ? { baseDir, tsConfig: undefined } : {}),
  };
  const r = (await cruise(dirs, options)).output as ICruiseResult;
  return r.summary.violations.map((v) => `${v.from} imports ${v.to} (${v.rule.name})`);
}

describe('layers', () => {
  it('src/ holds no import against the arrows', async () => {
    const found = await violations(['src']);
    expect(found, found.join('\n')).toEqual([]);
  }, 120_000);

  it('the rules catch engine → worker, data → engine, io → ui, worker → ui and cli → worker imports', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'layers-'));
    const file = (path: string, text: string) => {
      mkdirSync(join(dir, path, '..'), { recursive: true });
      writeFileSync(join(dir, path), text);
    };
    file('src/ui/view.ts', 'export const view = 1;\n');
    file('src/worker/api.ts', "import { view } from '../ui/view.ts';\nexport const api = view;\n");
    file('src/engine/op.ts', "import { api } from '../worker/api.ts';\nexport const op = api;\n");
    file('src/data/parse.ts', "import { op } from '../engine/op.ts';\nexport const parse = op;\n");
    file('src/io/read.ts', "import { view } from '../ui/view.ts';\nexport const read = view;\n");
    file('src/cli/main.ts', "import { api } from '../worker/api.ts';\nexport const main = api;\n");
    expect((await violations(['src'], dir)).sort()).toEqual([
      'src/cli/main.ts imports src/worker/api.ts (cli-has-no-browser-app)',
      'src/data/parse.ts imports src/engine/op.ts (data-and-io-stay-at-the-bottom)',
      'src/engine/op.ts imports src/worker/api.ts (engine-stays-below-the-app)',
      'src/io/read.ts imports src/ui/view.ts (data-and-io-stay-at-the-bottom)',
      'src/worker/api.ts imports src/ui/view.ts (worker-has-no-ui)',
    ]);
  }, 120_000);
});
