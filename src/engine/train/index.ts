// The training half of the engine.
export { checkpointFromFiles, checkpointToFiles, OPTIMIZER_FILE, TRAINER_STATE_FILE } from './checkpoint-files.ts';
export { DataLoader, epochOrder, type DataCursor, type DataLoaderOptions } from './data.ts';
export {
  loadOptionsFrom,
  loraConfigFrom,
  memoryPlanInput,
  planRun,
  startTraining,
  totalTrainingSteps,
  trainerConfigFrom,
  type RunPlan,
  type Training,
} from './run-builder.ts';
export { lrAt, lrLambda, warmupStepsOf, type ScheduleConfig } from './schedule.ts';
export { Trainer, type Checkpoint, type StepResult, type TrainerConfig } from './trainer.ts';
