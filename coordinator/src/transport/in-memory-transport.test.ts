import { describe, it, expect } from 'vitest';
import type { SignedTask } from '@fedssl/shared/protocol';
import { InMemoryTransport } from './in-memory-transport';

const task = (taskId: string) => ({ task: { taskId }, signature: 's' }) as unknown as SignedTask;

describe('InMemoryTransport', () => {
  it('offers to registered agents, declines for offline or throwing ones, and forwards cancels', async () => {
    const t = new InMemoryTransport();
    const cancelled: string[] = [];
    t.connect('site-b', {
      onTask: () => ({ accepted: true }),
      onCancel: (id, reason) => cancelled.push(`${id}:${reason}`),
    });
    t.connect('site-a', {
      onTask: () => {
        throw new Error('disk full');
      },
    });
    expect(t.onlineSiteIds()).toEqual(['site-a', 'site-b']);
    expect(await t.offerTask('site-b', task('t1'))).toEqual({ accepted: true });
    expect(await t.offerTask('site-a', task('t2'))).toEqual({ accepted: false, reason: 'disk full' });
    t.disconnect('site-b');
    expect(await t.offerTask('site-b', task('t3'))).toEqual({ accepted: false, reason: 'site is offline' });
    expect(t.onlineSiteIds()).toEqual(['site-a']);
    t.connect('site-b', {
      onTask: () => ({ accepted: false, reason: 'busy' }),
      onCancel: (id, r) => cancelled.push(`${id}:${r}`),
    });
    t.cancelTask('site-b', 't1', 'round failed');
    expect(cancelled).toEqual(['t1:round failed']);
    expect(t.offers.map((o) => [o.siteId, o.task.task.taskId])).toEqual([
      ['site-b', 't1'],
      ['site-a', 't2'],
      ['site-b', 't3'],
    ]);
  });
});
