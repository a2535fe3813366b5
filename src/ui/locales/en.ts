// English UI strings. Every visible string lives here (and in zh.ts, with the same keys).
export const en = {
  'app.tagline': 'Fine-tune open LLMs in this tab, on your own GPU. Nothing leaves your machine.',
  'lang.switch': '中文',
  'lang.label': 'Language',
  'gpu.title': 'Your GPU',
  'gpu.probing': 'Looking for a WebGPU adapter in the engine worker…',
  'gpu.vendor': 'Vendor',
  'gpu.architecture': 'Architecture',
  'gpu.description': 'Device',
  'gpu.features': 'Features',
  'gpu.limits': 'Limits',
  'gpu.selftest': 'Self-test',
  'gpu.selftest.ok': '{kernel} on the GPU in {ms} ms, max error {err}',
  'gpu.software': 'This is a software adapter (a CPU pretending to be a GPU): everything works, but training is very slow. Use a machine with a real GPU for real models.',
  'gpu.retry': 'Try again',
  'gpu.lost': 'The GPU device was lost ({reason}): {message}. Your data and settings are kept; press "Try again" to reconnect.',
  'nogpu.title': 'WebGPU is not available here',
  'nogpu.why': 'Tabtune trains on your GPU through WebGPU, and this browser did not give us one: {message}',
  'nogpu.chrome': 'Use Chrome or Edge 113 or newer on Windows, macOS or ChromeOS, Chrome 144+ on Linux, Safari 26+, or Firefox 141+ on Windows.',
  'nogpu.linux': 'On Linux with an older Chrome, open chrome://flags, enable “Unsafe WebGPU Support” and “Vulkan”, then restart the browser.',
  'nogpu.hardware': 'Check that hardware acceleration is on (chrome://settings/system) and that your GPU driver is up to date; chrome://gpu shows what Chrome sees.',
  'nogpu.worker': 'WebGPU must also be available to Web Workers (it is in every browser listed above).',
  'worker.failed': 'The engine worker failed to start: {message}',
} as const;

export type MessageKey = keyof typeof en;
