import { viteShaders } from '../engine/shaders.vite.ts';
import type { Gpu } from '../engine/gpu/device.ts';
import { probeGpu, type ProbeResult } from './probe.ts';

export type { ProbeResult } from './probe.ts';

export interface WorkerEvents {
  /** The GPU device was lost (driver reset, tab backgrounded too long, OOM): state is on the host. */
  deviceLost(info: { reason: string; message: string }): void;
}

/**
 * The Worker's API, called from the UI through comlink. The Worker owns the GPU device,
 * the engine and the data pipeline; the UI never touches WebGPU.
 */
export class TabtuneWorker {
  private gpu: Gpu | null = null;
  private events: Partial<WorkerEvents> = {};

  /** Registers UI callbacks (comlink proxies). */
  subscribe(events: Partial<WorkerEvents>): void {
    this.events = events;
  }

  async probe(): Promise<ProbeResult> {
    if (this.gpu) this.gpu.destroy();
    const { result, gpu } = await probeGpu(viteShaders, (info) => {
      this.gpu = null;
      this.events.deviceLost?.(info);
    });
    this.gpu = gpu;
    return result;
  }

  memory() {
    return this.gpu?.ledger.report() ?? null;
  }
}
