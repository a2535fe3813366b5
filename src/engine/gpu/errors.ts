/** Every GPU failure surfaces as a GpuError naming the kernel (or allocation) and its shapes. */
export type GpuErrorKind =
  'no-webgpu' | 'no-adapter' | 'compile' | 'validation' | 'out-of-memory' | 'internal' | 'device-lost' | 'limit';

export class GpuError extends Error {
  override readonly name = 'GpuError';
  constructor(
    readonly kind: GpuErrorKind,
    /** What we were doing: kernel name + shapes, or the allocation's label. */
    readonly what: string,
    detail: string,
  ) {
    super(`${kind} error in ${what}: ${detail}`);
  }
}

/** How many withErrorScopes bodies are running (their scopes already catch what a call inside raises). */
let openScopes = 0;

/** Whether an out-of-memory error raised now would be caught by a withErrorScopes around it. */
export function insideErrorScopes(): boolean {
  return openScopes > 0;
}

/** Runs `body` inside validation / out-of-memory / internal error scopes and throws the first error. */
export async function withErrorScopes<T>(device: GPUDevice, what: string, body: () => T | Promise<T>): Promise<T> {
  device.pushErrorScope('internal');
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');
  let result: T;
  openScopes++;
  try {
    result = await body();
  } finally {
    openScopes--;
    const [validation, oom, internal] = await Promise.all([
      device.popErrorScope(),
      device.popErrorScope(),
      device.popErrorScope(),
    ]);
    const err = firstError(what, validation, oom, internal);
    if (err) throw err;
  }
  return result;
}

function firstError(
  what: string,
  validation: GPUError | null,
  oom: GPUError | null,
  internal: GPUError | null,
): GpuError | null {
  if (oom) return new GpuError('out-of-memory', what, oom.message);
  if (validation) return new GpuError('validation', what, validation.message);
  if (internal) return new GpuError('internal', what, internal.message);
  return null;
}
