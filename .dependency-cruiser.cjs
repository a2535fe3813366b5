// Layers import downward only: ui → worker → engine → (data, io). `npm test` runs these rules
// (tests/unit/layers.test.ts) and names every import that breaks one.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'engine-stays-below-the-app',
      comment: 'The engine runs in a Worker, in vitest and in Node+Dawn: it imports no worker, UI or CLI code.',
      severity: 'error',
      from: { path: '^src/engine/' },
      to: { path: '^src/(worker|ui|cli)/' },
    },
    {
      name: 'data-and-io-stay-at-the-bottom',
      comment: 'Data and io have no GPU and no app: they import no engine, worker, UI or CLI code.',
      severity: 'error',
      from: { path: '^src/(data|io)/' },
      to: { path: '^src/(engine|worker|ui|cli)/' },
    },
    {
      name: 'worker-has-no-ui',
      comment: 'The Worker owns the GPU; the UI talks to it through comlink, never the other way.',
      severity: 'error',
      from: { path: '^src/worker/' },
      to: { path: '^src/(ui|cli)/' },
    },
    {
      name: 'cli-has-no-browser-app',
      comment: 'The CLI shares the engine with the studio, not its Worker or UI.',
      severity: 'error',
      from: { path: '^src/cli/' },
      to: { path: '^src/(worker|ui)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)node_modules/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
  },
};
