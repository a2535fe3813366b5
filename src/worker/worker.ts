import * as Comlink from 'comlink';
import { TabtuneWorker } from './api.ts';

Comlink.expose(new TabtuneWorker());
