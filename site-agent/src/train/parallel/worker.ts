/**
 * Entry point of one data-parallel training worker (a worker thread): its own tfjs
 * backend and replica of the model, tied to the other workers through shared memory.
 * Spoken to only by {@link ../pool}; see the message types there.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { pino } from 'pino';
import { FedsslError } from '@fedssl/shared/errors';
import { selectBackend } from '../backend';
import { Replica } from './replica';
import { SyncAbortedError } from './buffers';
import { WorkerSync } from './sync';
import type { ToWorker, FromWorker, WorkerData } from './messages';

async function main(): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error('parallel/worker must run in a worker thread');
  const data = workerData as WorkerData;
  const sync = new WorkerSync(data.buffers, data.rank);
  const post = (m: FromWorker, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);
  const fail = (e: unknown) => {
    const aborted = e instanceof SyncAbortedError;
    // Release the others from their barriers before reporting, or they would wait forever.
    if (!aborted) sync.abort();
    post({
      type: 'error',
      message: e instanceof Error ? e.message : String(e),
      aborted,
      ...(e instanceof FedsslError ? { code: e.code } : {}),
    });
  };

  let replica: Replica;
  try {
    await selectBackend(pino({ level: 'silent' }), data.backend);
    replica = await Replica.create(data.init, sync);
  } catch (e) {
    fail(e);
    return;
  }
  post({ type: 'ready' });

  port.on('message', (msg: ToWorker) => {
    void (async () => {
      try {
        if (msg.type === 'step') {
          post({ type: 'done', result: await replica.step(msg.batch) });
        } else if (msg.type === 'read') {
          const state = await replica.read(msg.withOptimizer);
          const buffers = [
            ...state.online,
            ...state.target,
            ...state.head,
            ...(state.optimizerState ?? []),
          ].map((t) => t.data.buffer as ArrayBuffer);
          post({ type: 'done', result: state }, buffers);
        } else {
          await replica.close();
          post({ type: 'done', result: null });
          // Nothing else keeps the thread alive: it exits with code 0.
          port.close();
        }
      } catch (e) {
        fail(e);
      }
    })();
  });
}

void main();
