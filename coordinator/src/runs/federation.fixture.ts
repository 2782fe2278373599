import { EventEmitter } from 'node:events';
import { Writable } from 'node:stream';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { encodeWeights, type NamedTensors } from '@fedssl/shared/codec';
import {
  generatePartyKeys,
  sealUpdate,
  toBase64,
  verifySignedTask,
  type PartyKeys,
} from '@fedssl/shared/crypto';
import {
  sharedParamSpecs,
  shapeSize,
  tinyModelConfig,
  trainingConfigSchema,
  type ModelConfig,
} from '@fedssl/shared/model';
import { PROTOCOL_VERSION, type SignedTask, type Task, type UpdateHeader } from '@fedssl/shared/protocol';
import type { CoordinatorConfig } from '../config/config';
import { CoordinatorKeysService } from '../keys/coordinator-keys.service';
import { ModelStoreService } from '../models/model-store.service';
import { AuditLog } from '../audit/audit-log';
import { SqliteStore } from '../store/sqlite-store';
import { InMemoryTransport } from '../transport/in-memory-transport';
import { UpdateStore } from '../uploads/update-store';
import { UploadService } from '../uploads/upload.service';
import { FakeClock } from './clock';
import type { SiteView } from './ports';
import { RoundEngine } from './round-engine';
import type { RunConfigInput } from './run-config';
import { RunRepository } from './run.repository';
import { RunService } from './run.service';

/**
 * Test wiring of the federation core without Nest or sockets: real Database, real model
 * store and coordinator keys on a temp data dir, in-memory transport, fake clock, and fake
 * agents that seal real deltas with the real envelope. Not used by production code.
 */

/** A pino logger at info level whose JSON lines are collected in `lines`. */
export function captureLogs(): { lines: Record<string, unknown>[]; logger: Logger } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n'))
        if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { lines, logger: pino({ level: 'info' }, stream) };
}

/** A model small enough for fast tests (a few thousand parameters). */
export function testModel(): ModelConfig {
  return {
    ...tinyModelConfig(16),
    widths: [4, 4, 4],
    projectorHidden: 8,
    projectionDim: 4,
    metadataHidden: 4,
  };
}

export function testRunBody(over: Partial<RunConfigInput> = {}): RunConfigInput {
  return {
    name: 'test run',
    rounds: 2,
    minSites: 2,
    roundDeadlineSeconds: 600,
    strategy: 'fedavg',
    model: testModel(),
    training: trainingConfigSchema.parse({}),
    seed: 42,
    ...over,
  };
}

/** Deterministic delta for a site: every value = `value` (optionally overridden per index). */
export function constantDelta(model: ModelConfig, value: number): NamedTensors {
  return sharedParamSpecs(model).map((s) => ({
    name: s.name,
    shape: s.shape.slice(),
    data: new Float32Array(shapeSize(s.shape)).fill(value),
  }));
}

export interface SealOptions {
  delta?: NamedTensors;
  /** Applied to the header fields before sealing (signed, so the result is authentic). */
  fields?: (
    f: Omit<
      UpdateHeader,
      | 'chunkCount'
      | 'chunkSize'
      | 'plaintextBytes'
      | 'noncePrefix'
      | 'ephemeralPublicKey'
      | 'keyBoxNonce'
      | 'keyBox'
      | 'ciphertextSha512'
    >,
  ) => void;
  /** Raw plaintext instead of an encoded delta. */
  plaintext?: Uint8Array;
  signingSecretKey?: Uint8Array;
  chunkSize?: number;
}

/** A site agent for tests: records offered tasks and seals real updates on request. */
export class FakeAgent {
  readonly keys: PartyKeys = generatePartyKeys();
  readonly tasks: Task[] = [];
  private waiters: ((t: Task) => void)[] = [];
  declineReason: string | null = null;

  constructor(
    readonly siteId: string,
    readonly name: string,
    private readonly coordinatorKeys: PartyKeys,
    readonly exampleCount: number,
    readonly deltaValue: number,
  ) {}

  site(status: SiteView['status'] = 'enrolled'): SiteView {
    return {
      id: this.siteId,
      name: this.name,
      signingPublicKey: toBase64(this.keys.signing.publicKey),
      status,
    };
  }

  onTask(signed: SignedTask): { accepted: true } | { accepted: false; reason: string } {
    const task = verifySignedTask(signed, this.coordinatorKeys.signing.publicKey);
    if (this.declineReason) return { accepted: false, reason: this.declineReason };
    this.tasks.push(task);
    const w = this.waiters.shift();
    w?.(task);
    return { accepted: true };
  }

  /** Resolves with the next task offered (or the newest one already received and not awaited). */
  nextTask(): Promise<Task> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  seal(task: Task, opts: SealOptions = {}) {
    const fields = {
      protocolVersion: PROTOCOL_VERSION,
      siteId: this.siteId,
      runId: task.runId,
      round: task.round,
      taskId: task.taskId,
      taskNonce: task.nonce,
      baseModelHash: task.modelHash,
      exampleCount: this.exampleCount,
      metrics: { loss: 1 / (task.round + 1) },
      createdAt: new Date(Date.parse(task.issuedAt) + 1000).toISOString(),
    };
    opts.fields?.(fields);
    return sealUpdate({
      plaintext: opts.plaintext ?? encodeWeights(opts.delta ?? constantDelta(task.model, this.deltaValue)),
      fields,
      chunkSize: opts.chunkSize ?? 4096,
      siteSigningSecretKey: opts.signingSecretKey ?? this.keys.signing.secretKey,
      coordinatorBoxPublicKey: this.coordinatorKeys.box.publicKey,
    });
  }
}

/** Settings of a {@link FederationFixture} that differ from production defaults. */
export interface FixtureOptions {
  /** Memory for updates kept opened from commit to aggregation (UpdateStore's default if absent). */
  openedBudgetBytes?: number;
}

/** Everything a federation test needs, over one data dir that survives {@link restart}. */
export class FederationFixture {
  readonly dataDir = mkdtempSync(join(tmpdir(), 'fedssl-fed-'));
  readonly clock = new FakeClock();
  readonly logger: Logger;
  readonly presence = new EventEmitter();
  readonly transport = new InMemoryTransport();
  readonly sites = new Map<string, SiteView>();
  readonly directory = { get: (id: string) => Promise.resolve(this.sites.get(id)) };
  db!: SqliteStore;
  audit!: AuditLog;
  keys!: CoordinatorKeysService;
  models!: ModelStoreService;
  repo!: RunRepository;
  updates!: UpdateStore;
  engine!: RoundEngine;
  uploads!: UploadService;
  runs!: RunService;

  private constructor(
    logger?: Logger,
    private readonly options: FixtureOptions = {},
  ) {
    this.logger = logger ?? pino({ level: 'silent' });
  }

  /** A fixture over a fresh data dir (SQLite store, migrated). */
  static async create(logger?: Logger, options?: FixtureOptions): Promise<FederationFixture> {
    const f = new FederationFixture(logger, options);
    await f.build();
    return f;
  }

  private async build(): Promise<void> {
    const config: CoordinatorConfig = {
      host: '127.0.0.1',
      port: 0,
      dataDir: this.dataDir,
      databaseUrl: null,
      logLevel: 'silent',
    };
    this.db = SqliteStore.open(join(this.dataDir, 'fedssl.sqlite'));
    this.audit = await new AuditLog(this.db, this.clock).init();
    this.keys = new CoordinatorKeysService(config, this.logger);
    this.models = new ModelStoreService(config, this.keys, this.clock, this.logger);
    this.repo = await new RunRepository(this.db).init();
    this.updates = new UpdateStore(this.dataDir, this.options);
    const deps = {
      repo: this.repo,
      transport: this.transport,
      sites: this.directory,
      presence: this.presence,
      models: this.models,
      keys: this.keys,
      updates: this.updates,
      clock: this.clock,
      logger: this.logger,
      audit: this.audit,
    };
    this.engine = new RoundEngine(deps);
    this.uploads = new UploadService({ ...deps, engine: this.engine });
    this.runs = new RunService(this.repo, this.engine, this.directory, this.clock, this.audit);
  }

  /** Simulates a coordinator restart: everything rebuilt from the same database and data dir. */
  async restart(): Promise<void> {
    await this.engine.idle();
    this.engine.stop();
    await this.db.close();
    await this.build();
  }

  agent(
    siteId: string,
    exampleCount: number,
    deltaValue: number,
    status: SiteView['status'] = 'enrolled',
  ): FakeAgent {
    const a = new FakeAgent(siteId, `Hospital ${siteId}`, this.keys.keys, exampleCount, deltaValue);
    this.sites.set(siteId, a.site(status));
    return a;
  }

  /** Connects an agent to the in-memory transport and announces it online. */
  connect(a: FakeAgent): void {
    this.transport.connect(a.siteId, { onTask: (t) => a.onTask(t) });
    this.presence.emit('online', a.siteId);
  }

  /** Uploads a sealed update through UploadService in chunk order. */
  async upload(
    siteId: string,
    sealed: ReturnType<FakeAgent['seal']>,
    mutateChunk?: (i: number, c: Uint8Array) => Uint8Array,
  ) {
    const { uploadId } = await this.uploads.begin(siteId, {
      header: sealed.header,
      signature: sealed.signature,
    });
    for (const [i, c] of sealed.chunks.entries())
      await this.uploads.chunk(siteId, { uploadId, index: i, data: mutateChunk ? mutateChunk(i, c) : c });
    return this.uploads.commit(siteId, { uploadId });
  }

  /** The weights of a published version, flattened to one float64 vector. */
  flatWeights(version: string): Float64Array {
    return Float64Array.from(this.models.readWeights(version).flatMap((t) => Array.from(t.data)));
  }

  async close(): Promise<void> {
    await this.engine.idle();
    this.engine.stop();
    await this.db.close();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}
