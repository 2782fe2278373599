import type { BackendPreference } from '../backend';
import type { ReplicaInit, ReplicaState, StepBatch, StepLosses } from './replica';
import type { SyncBuffers } from './buffers';

/** What a worker is started with. */
export interface WorkerData {
  rank: number;
  backend: Extract<BackendPreference, 'wasm' | 'cpu'>;
  buffers: SyncBuffers;
  init: ReplicaInit;
}

/** Requests to a worker; it answers each with one {@link FromWorker} message. */
export type ToWorker =
  { type: 'step'; batch: StepBatch } | { type: 'read'; withOptimizer: boolean } | { type: 'close' };

export type FromWorker =
  | { type: 'ready' }
  | { type: 'done'; result: StepLosses | ReplicaState | null }
  | {
      type: 'error';
      message: string;
      /** The FedsslError code when the worker threw one. */
      code?: string;
      /** Released from a barrier because another worker failed: not the cause. */
      aborted: boolean;
    };
