import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runAdminCliAt } from '../testing/admin-cli';
import { startTestCoordinator, type TestCoordinator } from '../testing/test-coordinator';

describe('fedssl-admin runs create: strategy options, update encoding and --config precedence', () => {
  let running: TestCoordinator;
  let token: string;

  const cli = (...argv: string[]) => runAdminCliAt(running.url, token, argv);
  const base = ['runs', 'create', '--name', 'r', '--rounds', '2', '--min-sites', '1'];
  /** The config the coordinator stored for the run `runs create --json` printed, read back with `runs show`. */
  const storedConfig = async (created: { code: number; out: string; err: string }) => {
    expect(created.code).toBe(0);
    const shown = await cli('runs', 'show', (JSON.parse(created.out) as { id: string }).id);
    return (JSON.parse(shown.out) as { config: Record<string, unknown> }).config;
  };
  const runCount = async () => (JSON.parse((await cli('--json', 'runs', 'list')).out) as unknown[]).length;
  const configFile = (name: string, config: Record<string, unknown>) => {
    const file = join(running.dataDir, name);
    writeFileSync(file, JSON.stringify(config));
    return file;
  };
  const fileConfig = {
    name: 'from-file',
    rounds: 3,
    minSites: 2,
    roundDeadlineSeconds: 120,
    strategy: { name: 'fedavgm', serverLearningRate: 1.5, serverMomentum: 0.9, clipNorm: 5 },
    model: { arch: 'tiny', inputSize: 16, norm: 'batch' },
    training: { batchSize: 4, updateEncoding: 'float16' },
    seed: 9,
  };

  beforeAll(async () => {
    running = await startTestCoordinator({ prefix: 'fedssl-cli-create-' });
    token = await running.token('admin', 'cli');
  });
  afterAll(async () => {
    await running?.close();
  });

  it('FedAvgM with server momentum 0.5 and int8 updates reach the stored run config', async () => {
    const config = await storedConfig(
      await cli(
        '--json',
        ...base,
        '--strategy',
        'fedavgm',
        '--server-momentum',
        '0.5',
        '--update-encoding',
        'int8',
      ),
    );
    expect(config['strategy']).toEqual({ name: 'fedavgm', serverLearningRate: 1, serverMomentum: 0.5 });
    expect(config['training']).toMatchObject({ updateEncoding: 'int8' });
  });

  it('sets every option of fedadam and trimmed-mean, and clipping on any strategy', async () => {
    const adam = await storedConfig(
      await cli(
        '--json',
        ...base,
        '--strategy',
        'fedadam',
        '--server-learning-rate',
        '0.05',
        '--beta1',
        '0.8',
        '--beta2',
        '0.95',
        '--tau',
        '0.01',
        '--clip-norm',
        '3',
      ),
    );
    expect(adam['strategy']).toEqual({
      name: 'fedadam',
      serverLearningRate: 0.05,
      beta1: 0.8,
      beta2: 0.95,
      tau: 0.01,
      clipNorm: 3,
    });
    const trimmed = await storedConfig(
      await cli('--json', ...base, '--strategy', 'trimmed-mean', '--trim-fraction', '0.2'),
    );
    expect(trimmed['strategy']).toEqual({ name: 'trimmed-mean', beta: 0.2 });
    // No option: the plain name, as before the flags existed.
    expect((await storedConfig(await cli('--json', ...base, '--strategy', 'median')))['strategy']).toBe(
      'median',
    );
  });

  it('refuses an option the strategy does not take, naming both, and creates nothing', async () => {
    const before = await runCount();
    expect(await cli(...base, '--server-momentum', '0.5')).toEqual({
      code: 1,
      out: '',
      err: 'error: RUN_CONFIG_INVALID: --server-momentum does not apply to strategy fedavg (only to fedavgm)\n',
    });
    expect((await cli(...base, '--strategy', 'median', '--beta1', '0.8', '--trim-fraction', '0.2')).err).toBe(
      'error: RUN_CONFIG_INVALID: --beta1 does not apply to strategy median (only to fedadam); --trim-fraction does not apply to strategy median (only to trimmed-mean)\n',
    );
    // The strategy may come from the file: fedavgm there takes no Adam option.
    const file = configFile('wrong-option.json', fileConfig);
    expect((await cli('runs', 'create', '--config', file, '--tau', '0.01')).err).toBe(
      'error: RUN_CONFIG_INVALID: --tau does not apply to strategy fedavgm (only to fedadam)\n',
    );
    expect(await runCount()).toBe(before);
  });

  it("refuses values out of range with the schema's error naming the field", async () => {
    expect(await cli(...base, '--strategy', 'fedavgm', '--server-momentum', '1')).toEqual({
      code: 1,
      out: '',
      err: 'error: RUN_CONFIG_INVALID: strategy.serverMomentum: Too big: expected number to be <1 (HTTP 400 POST /runs)\n',
    });
    expect((await cli(...base, '--strategy', 'trimmed-mean', '--trim-fraction', '0.5')).err).toBe(
      'error: RUN_CONFIG_INVALID: strategy.beta: Too big: expected number to be <0.5 (HTTP 400 POST /runs)\n',
    );
    expect((await cli(...base, '--strategy', 'fedadam', '--tau', '0')).err).toBe(
      'error: RUN_CONFIG_INVALID: strategy.tau: Too small: expected number to be >0 (HTTP 400 POST /runs)\n',
    );
    const notNumber = await cli(...base, '--strategy', 'fedavgm', '--server-momentum', 'high');
    expect(notNumber.code).toBe(1);
    expect(notNumber.err).toBe(
      "error: option '--server-momentum <β>' argument 'high' is invalid. --server-momentum must be a number\n",
    );
    const encoding = await cli(...base, '--update-encoding', 'int4');
    expect(encoding.code).toBe(1);
    expect(encoding.err).toBe(
      "error: option '--update-encoding <type>' argument 'int4' is invalid. Allowed choices are float32, float16, int8.\n",
    );
  });

  it("flags typed with --config override the file's fields; flag defaults do not", async () => {
    const file = configFile('run.json', fileConfig);
    const config = await storedConfig(
      await cli(
        '--json',
        'runs',
        'create',
        '--config',
        file,
        '--server-momentum',
        '0.5',
        '--rounds',
        '5',
        '--update-encoding',
        'int8',
      ),
    );
    expect(config).toMatchObject({
      name: 'from-file',
      rounds: 5,
      minSites: 2,
      roundDeadlineSeconds: 120, // not --deadline's default 600
      seed: 9, // not --seed's default 0
      strategy: { name: 'fedavgm', serverLearningRate: 1.5, serverMomentum: 0.5, clipNorm: 5 },
      model: { arch: 'tiny', inputSize: 16, norm: 'batch' }, // not --size 32, --norm group
      training: { batchSize: 4, updateEncoding: 'int8' },
    });

    // A file giving the strategy by name takes options for it too.
    const byName = configFile('by-name.json', { ...fileConfig, strategy: 'fedavgm' });
    expect(
      (
        await storedConfig(
          await cli('--json', 'runs', 'create', '--config', byName, '--server-momentum', '0.5'),
        )
      )['strategy'],
    ).toEqual({ name: 'fedavgm', serverLearningRate: 1, serverMomentum: 0.5 });
  });

  it("--strategy other than the file's starts from its defaults and says what it dropped", async () => {
    const file = configFile('switch.json', fileConfig);
    const created = await cli(
      '--json',
      'runs',
      'create',
      '--config',
      file,
      '--strategy',
      'fedadam',
      '--beta1',
      '0.8',
    );
    expect(created.err).toBe(
      "warning: --strategy fedadam replaces the file's strategy fedavgm; its serverLearningRate, serverMomentum, clipNorm not kept\n",
    );
    expect((await storedConfig(created))['strategy']).toEqual({
      name: 'fedadam',
      serverLearningRate: 0.01,
      beta1: 0.8,
      beta2: 0.99,
      tau: 0.001,
    });
  });

  it('refuses a --config file that is not a JSON object, naming it', async () => {
    const file = configFile('list.json', {});
    writeFileSync(file, '[1]');
    expect((await cli('runs', 'create', '--config', file)).err).toBe(
      `error: RUN_CONFIG_INVALID: ${file} does not hold a JSON object (a run config)\n`,
    );
  });
});
