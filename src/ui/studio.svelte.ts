// Runtime state shared by the steps (not persisted: it is rebuilt from the Worker after a reload).
import type {
  DataOverview,
  DownloadProgress,
  ModelState,
  ProbeResult,
  RunProgress,
  RunRecord,
  StudioError,
} from '../worker/api.ts';
import type { WorkerApi } from '../worker/client.ts';

export const studio = $state({
  probe: null as ProbeResult | null,
  model: null as ModelState | null,
  modelBusy: false,
  modelError: null as StudioError | null,
  download: null as DownloadProgress | null,
  data: null as DataOverview | null,
  dataBusy: false,
  dataError: null as StudioError | null,
  /** Live progress of the run on the GPU (pushed by the Worker). */
  progress: null as RunProgress | null,
  runs: [] as RunRecord[],
  activeRun: null as string | null,
});

let apiRef: WorkerApi | null = null;

export function setApi(a: WorkerApi): void {
  apiRef = a;
}

export function api(): WorkerApi {
  if (!apiRef) throw new Error('the engine worker is not running');
  return apiRef;
}
