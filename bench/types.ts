import type { Gpu } from '../src/engine/gpu/device.ts';
import type { Recorder } from '../src/engine/gpu/recorder.ts';

/** One benchmark case: `setup` allocates inputs; `record` encodes one timed iteration. */
export interface BenchCase {
  name: string;
  /** Human-readable shape, e.g. "512×896×4864" or "B1 T256 H14/2 D64". */
  shape: string;
  /** Floating-point operations of one iteration (0 if not meaningful). */
  flops: number;
  /** Minimum bytes one iteration must read + write from GPU memory. */
  bytesMoved: number;
  /** Extra figures reported as-is (e.g. peak scratch bytes). */
  extra?: Record<string, number | string>;
  /** Skip on slow software adapters unless --full is given (e.g. seq 4096 attention). */
  heavy?: boolean;
  setup(gpu: Gpu): Promise<BenchInstance>;
}

export interface BenchInstance {
  record(rec: Recorder): Promise<void>;
  cleanup(): void;
}

export interface BenchResult {
  name: string;
  shape: string;
  ms_median: number;
  ms_min: number;
  gflops: number;
  bytes_moved: number;
  arithmetic_intensity: number;
  dispatches: number;
  runs: number;
  extra?: Record<string, number | string>;
}
