#!/usr/bin/env node
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { trainingConfigSchema } from '@fedssl/shared/model';
import { AdminClient } from './admin-client';
import { CliError, formatCliError, processIo, type CliIo } from './io';
import { EXPORT_FORMATS, type ExportFormat } from '../models/export/export-model';
import {
  STRATEGY_NAMES,
  normalizeStrategyConfig,
  strategyObjectSchema,
  type StrategyName,
} from '../strategies/config';
import { describeCard, pullModel } from './model-pull';
import { waitForRun } from './run-wait';

/** Seams for running the CLI in-process (tests). */
export interface AdminCliDeps {
  io: CliIo;
  env: NodeJS.ProcessEnv;
  fetch?: typeof fetch;
  sleep?: (ms: number) => Promise<void>;
}

const int =
  (name: string, min = 0) =>
  (v: string): number => {
    if (!/^\d+$/.test(v) || Number(v) < min)
      throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}`);
    return Number(v);
  };
const num =
  (name: string) =>
  (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number`);
    return n;
  };

interface GlobalOpts {
  url: string;
  token?: string;
  json: boolean;
}

/** One line per key: id, status, created, end of grace. */
function formatKeyRows(
  keys: { keyId: string; status: string; createdAt: string; validUntil: string | null }[],
): string {
  return (
    keys
      .map((k) => `${k.keyId}  ${k.status}  created=${k.createdAt} validUntil=${k.validUntil ?? '-'}`)
      .join('\n') + '\n'
  );
}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** Each strategy's options object (the run config's `strategy: { name, … }`), by name. */
const STRATEGY_SHAPES = new Map<string, Record<string, { description?: string }>>(
  strategyObjectSchema.options.map((o) => [o.shape.name.value, o.shape]),
);

/**
 * The strategy options `runs create` sets by flag and the field each fills. Which strategies
 * take a field, its default and its help come from the schema (strategies/config.ts), so they
 * cannot drift from what the server accepts.
 */
const STRATEGY_OPTION_FLAGS = [
  { flag: '--server-learning-rate', arg: '<η>', field: 'serverLearningRate' },
  { flag: '--server-momentum', arg: '<β>', field: 'serverMomentum' },
  { flag: '--beta1', arg: '<β1>', field: 'beta1' },
  { flag: '--beta2', arg: '<β2>', field: 'beta2' },
  { flag: '--tau', arg: '<τ>', field: 'tau' },
  { flag: '--trim-fraction', arg: '<β>', field: 'beta' },
  { flag: '--clip-norm', arg: '<C>', field: 'clipNorm' },
] as const;

/** @example strategiesTaking('serverLearningRate') // ['fedavgm', 'fedadam'] */
function strategiesTaking(field: string): StrategyName[] {
  return STRATEGY_NAMES.filter((n) => field in (STRATEGY_SHAPES.get(n) ?? {}));
}

/** @example strategyOptionHelp('serverMomentum') // 'server momentum (fedavgm, default 0.9; strategy.serverMomentum)' */
function strategyOptionHelp(field: string): string {
  const takers = strategiesTaking(field);
  const description = STRATEGY_SHAPES.get(takers[0] ?? '')?.[field]?.description ?? field;
  if (takers.length === STRATEGY_NAMES.length) return `${description} (any strategy; strategy.${field})`;
  const defaults = takers.map((n) => {
    const d = (normalizeStrategyConfig(n) as Record<string, unknown>)[field];
    return d === undefined ? n : `${n}, default ${String(d)}`;
  });
  return `${description} (${defaults.join('; ')}; strategy.${field})`;
}

/**
 * The run config's `strategy` from the file's (`undefined` without one) and the strategy flags
 * given: `name` when --strategy counts, `options` the option flags typed. An option the
 * resulting strategy does not take is refused here, naming both; ranges are the server
 * schema's to check (its error names the field).
 * @example mergeStrategy('fedavgm', undefined, [{ flag: '--server-momentum', field: 'serverMomentum', value: 0.5 }], warn)
 * // { name: 'fedavgm', serverMomentum: 0.5 }
 */
function mergeStrategy(
  file: unknown,
  name: string | undefined,
  options: { flag: string; field: string; value: unknown }[],
  warn: (text: string) => void,
): unknown {
  if (name === undefined && options.length === 0) return file;
  const fromFile = typeof file === 'string' ? { name: file } : isRecord(file) ? file : undefined;
  const fileName = typeof fromFile?.['name'] === 'string' ? fromFile['name'] : undefined;
  // The flag's default (fedavg) when neither the file nor the command line names one.
  const strategyName = name ?? fileName ?? 'fedavg';
  let strategy: Record<string, unknown> = { name: strategyName };
  if (fromFile !== undefined && fileName === strategyName) strategy = { ...fromFile };
  else if (fromFile !== undefined) {
    // Options chosen for another strategy would be refused there or, worse, mean something else.
    const dropped = Object.keys(fromFile).filter((k) => k !== 'name');
    if (dropped.length > 0)
      warn(
        `warning: --strategy ${strategyName} replaces the file's strategy ${fileName ?? '(unnamed)'}; its ${dropped.join(', ')} not kept\n`,
      );
  }
  const known = (STRATEGY_NAMES as readonly string[]).includes(strategyName);
  const refused = options.filter(
    (x) => known && !strategiesTaking(x.field).includes(strategyName as StrategyName),
  );
  if (refused.length > 0)
    throw new CliError(
      'RUN_CONFIG_INVALID',
      refused
        .map(
          (x) =>
            `${x.flag} does not apply to strategy ${strategyName} (only to ${strategiesTaking(x.field).join(', ')})`,
        )
        .join('; '),
    );
  for (const x of options) strategy[x.field] = x.value;
  return Object.keys(strategy).length === 1 ? strategyName : strategy;
}

/** A `--config` file: one JSON object (the run config the API takes). */
function readRunConfigFile(path: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new CliError('RUN_CONFIG_INVALID', `cannot read ${path}: ${(e as Error).message}`);
  }
  if (!isRecord(parsed))
    throw new CliError('RUN_CONFIG_INVALID', `${path} does not hold a JSON object (a run config)`);
  return parsed;
}

const UPDATE_ENCODINGS = trainingConfigSchema.shape.updateEncoding.unwrap().options;

/** Builds the `fedssl-admin` program; every action resolves to an exit code via `setExit`. */
function buildProgram(deps: AdminCliDeps, setExit: (code: number) => void): Command {
  const { io } = deps;
  const program = new Command('fedssl-admin')
    .description('Administer a fedssl coordinator over its REST API')
    .addOption(
      new Option('--url <url>', 'coordinator base URL').env('FEDSSL_URL').default('http://127.0.0.1:8080'),
    )
    .addOption(new Option('--token <token>', 'admin bearer token').env('FEDSSL_ADMIN_TOKEN'))
    .option('--json', 'machine-readable JSON output', false)
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr });

  const g = (): GlobalOpts => program.opts<GlobalOpts>();
  const client = () => new AdminClient({ url: g().url, token: g().token, fetch: deps.fetch });
  const print = (value: unknown, human: () => string) =>
    io.stdout(g().json ? `${JSON.stringify(value, null, 2)}\n` : human());

  const tokens = program.command('tokens').description('enrollment tokens');
  tokens
    .command('create')
    .description('issue a one-time enrollment token for a new site (shown once)')
    .requiredOption('--site <name>', 'site name')
    .option('--expires-in <seconds>', 'validity in seconds', int('--expires-in', 60), 86_400)
    .action(async (o: { site: string; expiresIn: number }) => {
      const r = await client().post<{ token: string; siteId: string; siteName: string; expiresAt: string }>(
        '/enrollment-tokens',
        { siteName: o.site, expiresInSeconds: o.expiresIn },
      );
      print(r, () => `site ${r.siteName} (${r.siteId})\ntoken ${r.token}\nexpires ${r.expiresAt}\n`);
    });
  type EnrollmentTokenRow = { siteId: string; siteName: string; expiresAt: string; state: string };
  const enrollmentLine = (t: EnrollmentTokenRow) =>
    `${t.siteId}  ${t.siteName}  ${t.state}  expires=${t.expiresAt}\n`;
  tokens
    .command('list')
    .description('issued tokens, newest first, with their state (never the token itself)')
    .action(async () => {
      const list = await client().get<EnrollmentTokenRow[]>('/enrollment-tokens');
      print(list, () => (list.length === 0 ? 'no enrollment tokens\n' : list.map(enrollmentLine).join('')));
    });
  tokens
    .command('expire <siteId>')
    .description("expire a site's pending token now")
    .action(async (siteId: string) => {
      const t = await client().post<EnrollmentTokenRow>(
        `/enrollment-tokens/${encodeURIComponent(siteId)}/expire`,
        {},
      );
      print(t, () => enrollmentLine(t));
    });

  const adminTokens = program.command('admin-tokens').description('bearer tokens of the admin API');
  type AdminTokenRow = {
    id: string;
    name: string;
    role: string;
    expiresAt: string | null;
    revokedAt: string | null;
  };
  const tokenLine = (t: AdminTokenRow) =>
    `${t.id}  ${t.name}  ${t.role}  expires=${t.expiresAt ?? 'never'}${t.revokedAt ? `  revoked ${t.revokedAt}` : ''}`;
  adminTokens
    .command('create')
    .description('issue an admin token (shown once); it never expires unless told')
    .requiredOption('--name <name>', 'who or what holds it')
    .addOption(
      new Option('--role <role>', 'admin|operator|viewer')
        .choices(['admin', 'operator', 'viewer'])
        .makeOptionMandatory(),
    )
    .option('--expires-in <seconds>', 'valid for this many seconds', int('--expires-in', 60))
    .option('--expires-at <iso-time>', 'valid until this instant (ISO-8601)')
    .action(async (o: { name: string; role: string; expiresIn?: number; expiresAt?: string }) => {
      const r = await client().post<AdminTokenRow & { token: string }>('/admin-tokens', {
        name: o.name,
        role: o.role,
        ...(o.expiresIn !== undefined ? { expiresInSeconds: o.expiresIn } : {}),
        ...(o.expiresAt !== undefined ? { expiresAt: o.expiresAt } : {}),
      });
      print(r, () => `${tokenLine(r)}\ntoken ${r.token}\n`);
    });
  adminTokens.command('list').action(async () => {
    const list = await client().get<AdminTokenRow[]>('/admin-tokens');
    print(list, () => list.map((t) => `${tokenLine(t)}\n`).join(''));
  });
  adminTokens.command('revoke <id>').action(async (id: string) => {
    const t = await client().post<AdminTokenRow>(`/admin-tokens/${encodeURIComponent(id)}/revoke`, {});
    print(t, () => `${tokenLine(t)}\n`);
  });

  const sites = program.command('sites').description('enrolled sites');
  sites.command('list').action(async () => {
    const list = await client().get<
      {
        id: string;
        name: string;
        status: string;
        online: boolean;
        lastSeenAt: string | null;
        backend: string | null;
        exampleCount: number | null;
      }[]
    >('/sites');
    print(list, () =>
      list.length === 0
        ? 'no sites\n'
        : list
            .map(
              (s) =>
                `${s.id}  ${s.name}  ${s.status}${s.online ? ' online' : ''}  backend=${s.backend ?? '-'} examples=${s.exampleCount ?? '-'} lastSeen=${s.lastSeenAt ?? '-'}`,
            )
            .join('\n') + '\n',
    );
  });
  sites
    .command('revoke <id>')
    .requiredOption('--reason <reason>', 'why (kept in the record)')
    .action(async (id: string, o: { reason: string }) => {
      const s = await client().post<{ id: string; name: string; revokedAt: string }>(
        `/sites/${encodeURIComponent(id)}/revoke`,
        { reason: o.reason },
      );
      print(s, () => `revoked ${s.id} (${s.name}) at ${s.revokedAt}\n`);
    });

  sites
    .command('keys <id>')
    .description("a site's keys with their status (current, grace, expired)")
    .action(async (id: string) => {
      const keys = await client().get<
        { keyId: string; status: string; createdAt: string; validUntil: string | null }[]
      >(`/sites/${encodeURIComponent(id)}/keys`);
      print(keys, () => formatKeyRows(keys));
    });

  const keys = program.command('keys').description("the coordinator's keys (docs/keys.md)");
  keys.command('show').action(async () => {
    const k = await client().get<{ keyId: string; fingerprint: string }>('/coordinator/keys');
    print(k, () => `key id       ${k.keyId}\nfingerprint  ${k.fingerprint}\n`);
  });
  keys.command('history').action(async () => {
    const list =
      await client().get<{ keyId: string; status: string; createdAt: string; validUntil: string | null }[]>(
        '/coordinator/keys/history',
      );
    print(list, () => formatKeyRows(list));
  });
  keys
    .command('rotate')
    .description('new coordinator keys; agents follow the announcement signed by the old key')
    .option(
      '--grace-seconds <n>',
      'how long the old keys stay accepted (default: the coordinator setting)',
      int('--grace-seconds'),
    )
    .action(async (o: { graceSeconds?: number }) => {
      const r = await client().post<{
        previousKeyId: string;
        keyId: string;
        fingerprint: string;
        previousKeyValidUntil: string;
      }>('/coordinator/keys/rotate', o.graceSeconds === undefined ? {} : { graceSeconds: o.graceSeconds });
      print(
        r,
        () =>
          `rotated ${r.previousKeyId} -> ${r.keyId}; old keys accepted until ${r.previousKeyValidUntil}\nfingerprint  ${r.fingerprint}\n`,
      );
    });

  const runs = program.command('runs').description('training runs');
  const create = runs
    .command('create')
    .description(
      'create a run from flags, or from a run config file (--config) that flags given with it override',
    )
    .option('--name <name>', 'run name')
    .option('--rounds <n>', 'number of rounds', int('--rounds', 1))
    .option('--min-sites <n>', 'minimum sites per round', int('--min-sites', 1))
    .option('--deadline <seconds>', 'round deadline in seconds', int('--deadline', 1), 600)
    .option('--arch <arch>', 'encoder architecture (tiny|resnet18|resnet50)', 'tiny')
    .option('--size <px>', 'input size in pixels', int('--size', 16), 32)
    .addOption(
      new Option(
        '--norm <kind>',
        'encoder normalization (group: the default, recommended for pretraining; docs/models.md)',
      )
        .choices(['group', 'batch'])
        .default('group'),
    )
    .option('--batch-size <n>', 'local batch size', int('--batch-size', 2))
    .option('--max-steps <n>', 'max optimizer steps per round (0 = no bound)', int('--max-steps', 0))
    .option('--lambda <l>', 'metadata loss weight λ', num('--lambda'))
    .option('--seed <n>', 'seed of the initial weights', int('--seed', 0), 0)
    .addOption(
      new Option('--strategy <name>', 'aggregation strategy; its options below, unset ones at their defaults')
        .choices(STRATEGY_NAMES)
        .default('fedavg'),
    );
  const strategyFlags = STRATEGY_OPTION_FLAGS.map((s) => {
    const option = new Option(`${s.flag} ${s.arg}`, strategyOptionHelp(s.field)).argParser(num(s.flag));
    create.addOption(option);
    return { ...s, key: option.attributeName() };
  });
  create
    .addOption(
      new Option('--local-update <mode>', 'how sites start a round from the global model').choices([
        'replace',
        'fedema',
      ]),
    )
    .option('--fedema-scaler <λ>', "FedEMA's λ in μ = min(λ·‖w_g − w_l‖, 1)", num('--fedema-scaler'))
    .addOption(
      new Option(
        '--site-optimizer-state <mode>',
        "sites' Adam state at each round: reset (fresh, the default) or keep (continue from the site's previous round; docs/models.md)",
      ).choices(['reset', 'keep']),
    )
    .addOption(
      new Option(
        '--update-encoding <type>',
        `${trainingConfigSchema.shape.updateEncoding.description ?? 'element type of the uploaded delta'}; default float32`,
      ).choices(UPDATE_ENCODINGS),
    )
    .option(
      '--no-reuse-accepted-updates',
      'a retried round attempt asks every site to train again (default: updates accepted earlier are carried)',
    )
    .option(
      '--config <file>',
      'run config as JSON; flags typed with it override its fields (their defaults do not)',
    )
    .addHelpText(
      'after',
      `
A strategy option given for a strategy that does not take it is refused; its
range is checked by the coordinator, whose error names the field.

With --config FILE, the flags typed on the command line override the file's
fields one by one, strategy options included (flag defaults never do); a
--strategy other than the file's starts from that strategy's defaults and drops
the file's strategy options, with a warning.

Example (FedAvgM with server momentum 0.5, docs/models.md):
  fedssl-admin runs create --name bus-bra --rounds 20 --min-sites 3 \\
    --strategy fedavgm --server-momentum 0.5
`,
    )
    .action(async (o: Record<string, unknown>, cmd: Command) => {
      const file = typeof o['config'] === 'string' ? readRunConfigFile(o['config']) : undefined;
      // Without a file every flag counts, defaults included; with one only the flags typed, so
      // flag defaults (--deadline 600, --arch tiny, …) never replace the file's values.
      const given = (key: string) =>
        o[key] !== undefined && (file === undefined || cmd.getOptionValueSource(key) === 'cli');
      if (file === undefined) {
        for (const k of ['name', 'rounds', 'minSites'] as const) {
          if (o[k] === undefined)
            throw new CliError(
              'RUN_CONFIG_INVALID',
              `--${k === 'minSites' ? 'min-sites' : k} is required (or pass --config FILE.json)`,
            );
        }
      }
      const pick = (pairs: [field: string, key: string][]) =>
        Object.fromEntries(pairs.filter(([, key]) => given(key)).map(([field, key]) => [field, o[key]]));
      const body: Record<string, unknown> = file ?? {};
      const overlay = (section: 'model' | 'training', pairs: [field: string, key: string][]) => {
        const fields = pick(pairs);
        if (file === undefined || Object.keys(fields).length > 0)
          body[section] = { ...(isRecord(body[section]) ? body[section] : {}), ...fields };
      };
      Object.assign(
        body,
        pick([
          ['name', 'name'],
          ['rounds', 'rounds'],
          ['minSites', 'minSites'],
          ['roundDeadlineSeconds', 'deadline'],
          ['seed', 'seed'],
        ]),
      );
      const strategy = mergeStrategy(
        body['strategy'],
        given('strategy') ? String(o['strategy']) : undefined,
        strategyFlags
          .filter((s) => given(s.key))
          .map((s) => ({ flag: s.flag, field: s.field, value: o[s.key] })),
        io.stderr,
      );
      if (strategy !== undefined) body['strategy'] = strategy;
      overlay('model', [
        ['arch', 'arch'],
        ['inputSize', 'size'],
        ['norm', 'norm'],
      ]);
      overlay('training', [
        ['batchSize', 'batchSize'],
        ['maxStepsPerRound', 'maxSteps'],
        ['metadataWeight', 'lambda'],
        ['localUpdate', 'localUpdate'],
        ['fedemaScaler', 'fedemaScaler'],
        ['siteOptimizerState', 'siteOptimizerState'],
        ['updateEncoding', 'updateEncoding'],
      ]);
      if (o['reuseAcceptedUpdates'] === false) body['reuseAcceptedUpdates'] = false;
      const r = await client().post<{ id: string; name: string; state: string }>('/runs', body);
      print(r, () => `created run ${r.id} (${r.name}) ${r.state}\n`);
    });
  runs.command('start <id>').action(async (id: string) => {
    const r = await client().post<{ id: string; state: string }>(`/runs/${encodeURIComponent(id)}/start`);
    print(r, () => `run ${r.id} ${r.state}\n`);
  });
  for (const verb of ['pause', 'resume', 'cancel'] as const) {
    runs.command(`${verb} <id>`).action(async (id: string) => {
      const r = await client().post<{ id: string; state: string }>(`/runs/${encodeURIComponent(id)}/${verb}`);
      print(r, () => `run ${r.id} ${r.state}\n`);
    });
  }
  runs.command('list').action(async () => {
    const list =
      await client().get<
        { id: string; name: string; state: string; currentRound: number; config: { rounds: number } }[]
      >('/runs');
    print(list, () =>
      list.length === 0
        ? 'no runs\n'
        : list
            .map((r) => `${r.id}  ${r.name}  ${r.state}  round ${r.currentRound}/${r.config.rounds}`)
            .join('\n') + '\n',
    );
  });
  runs.command('show <id>').action(async (id: string) => {
    const r = await client().get<Record<string, unknown>>(`/runs/${encodeURIComponent(id)}`);
    io.stdout(`${JSON.stringify(r, null, 2)}\n`);
  });
  runs
    .command('wait <id>')
    .option('--timeout <seconds>', 'give up after this many seconds', int('--timeout', 1))
    .action(async (id: string, o: { timeout?: number }) => {
      setExit(
        await waitForRun(client(), io, {
          runId: id,
          timeoutSeconds: o.timeout,
          json: g().json,
          sleep: deps.sleep,
        }),
      );
    });

  const audit = program.command('audit').description('the hash-chained audit log');
  audit
    .command('list')
    .option('--after <seq>', 'entries after this seq', int('--after', 0))
    .option('--limit <n>', 'at most this many entries (1–1000)', int('--limit', 1))
    .action(async (o: { after?: number; limit?: number }) => {
      const r = await client().get<{
        entries: { seq: number; at: string; actor: string; action: string; target: string }[];
        nextAfter: number | null;
      }>(`/audit?after=${o.after ?? 0}&limit=${o.limit ?? 100}`);
      print(r, () =>
        r.entries.length === 0
          ? 'no entries\n'
          : r.entries.map((e) => `${e.seq}  ${e.at}  ${e.actor}  ${e.action}  ${e.target}`).join('\n') + '\n',
      );
    });
  audit.command('verify').action(async () => {
    const r = await client().get<{ ok: boolean; entries: number; firstBadSeq?: number; reason?: string }>(
      '/audit/verify',
    );
    print(r, () =>
      r.ok
        ? `audit log intact: ${r.entries} entries\n`
        : `audit log BROKEN at entry ${r.firstBadSeq ?? '?'}: ${r.reason ?? ''}\n`,
    );
    if (!r.ok) setExit(2);
  });

  const models = program.command('models').description('published global models');
  models.command('list').action(async () => {
    const list = await client().get<
      {
        manifest: {
          version: string;
          round: number;
          weightsBytes: number;
          weightsSha256: string;
          createdAt: string;
        };
        /** Absent from coordinators older than the field. */
        weightsAvailable?: boolean;
        prunedAt?: string | null;
      }[]
    >('/models');
    const pruned = (v: (typeof list)[number]) =>
      v.weightsAvailable === false ? `  weights pruned ${v.prunedAt ?? '(not recorded)'}` : '';
    print(list, () =>
      list.length === 0
        ? 'no models\n'
        : list
            .map(
              (v) =>
                `${v.manifest.version}  round ${v.manifest.round}  ${v.manifest.weightsBytes} bytes  sha256 ${v.manifest.weightsSha256.slice(0, 16)}…  ${v.manifest.createdAt}${pruned(v)}`,
            )
            .join('\n') + '\n',
    );
  });
  models
    .command('prune')
    .description('apply the retention policy: keep the last N versions of each run (dry run unless --apply)')
    .option(
      '--retain <n>',
      "versions to keep per run (default: the coordinator's FEDSSL_RETAIN_VERSIONS)",
      int('--retain', 1),
    )
    .option('--apply', 'delete the weights (default: only show what would be deleted)', false)
    .action(async (o: { retain?: number; apply: boolean }) => {
      const r = await client().post<{
        dryRun: boolean;
        retain: number;
        pruned: string[];
        bytesFreed: number;
        decisions: { version: string; action: string; reasons: string[] }[];
      }>('/models/prune', { dryRun: !o.apply, ...(o.retain === undefined ? {} : { retain: o.retain }) });
      print(r, () => {
        const lines = r.decisions.map(
          (d) => `${d.version}  ${d.action}${d.reasons.length > 0 ? `  (${d.reasons.join(', ')})` : ''}`,
        );
        const verb = r.dryRun ? 'would prune' : 'pruned';
        return `${lines.join('\n')}\n${verb} ${r.pruned.length} version(s), ${r.bytesFreed} bytes (retain ${r.retain})${r.dryRun ? '; dry run, pass --apply to delete' : ''}\n`;
      });
    });
  models
    .command('keep <version>')
    .description('mark a version so retention never prunes it (--off clears the mark)')
    .option('--off', 'clear the mark', false)
    .action(async (version: string, o: { off: boolean }) => {
      const r = await client().post<{ version: string; keep: boolean }>(
        `/models/${encodeURIComponent(version)}/keep`,
        { keep: !o.off },
      );
      print(r, () => `${r.version} ${r.keep ? 'kept' : 'no longer kept'}\n`);
    });
  models
    .command('pull')
    .requiredOption('--version <version>', 'model version, e.g. <runId>.r3, or "latest"')
    .requiredOption('--out <dir>', 'output directory')
    .addOption(
      new Option(
        '--format <format>',
        'fsw (signed bytes), safetensors (PyTorch) or tfjs (encoder LayersModel)',
      )
        .choices(EXPORT_FORMATS)
        .default('fsw'),
    )
    .option('--fingerprint <fp>', 'expected coordinator key fingerprint (compare out of band)')
    .option(
      '--input-size <px>',
      "tfjs: input side the graph is built for (group-norm encoders take only that size; default the model's)",
      int('--input-size', 16),
    )
    .action(
      async (o: {
        version: string;
        out: string;
        format: ExportFormat;
        fingerprint?: string;
        inputSize?: number;
      }) => {
        if (o.inputSize !== undefined && o.format !== 'tfjs')
          throw new CliError('PROTOCOL_INVALID_MESSAGE', '--input-size applies to --format tfjs only');
        const r = await pullModel(client(), {
          version: o.version,
          outDir: o.out,
          format: o.format,
          fingerprint: o.fingerprint,
          tfjsInputSize: o.inputSize,
        });
        if (r.unpinned) {
          io.stderr(
            `warning: coordinator key not pinned; its fingerprint is "${r.coordinatorFingerprint}" — compare it out of band and pass --fingerprint\n`,
          );
        }
        print(
          {
            version: r.manifest.version,
            format: r.format,
            files: r.files,
            weightsPath: r.weightsPath,
            manifestPath: r.manifestPath,
            sha256: r.manifest.weightsSha256,
            card: r.card,
          },
          () =>
            `pulled ${r.manifest.version} (${r.manifest.weightsBytes} bytes, sha256 ${r.manifest.weightsSha256}, verified) as ${r.format} → ${o.out}: ${r.files.join(', ')}\n` +
            describeCard(r.card),
        );
      },
    );

  return program;
}

/**
 * Runs `fedssl-admin` with `argv` (without the node and script entries) and resolves to
 * the exit code. Failures print one line on stderr: `error: CODE: message`.
 */
export async function runAdminCli(
  argv: string[],
  deps: AdminCliDeps = { io: processIo, env: process.env },
): Promise<number> {
  let exit = 0;
  // commander reads .env() from process.env; map the injected env onto the options instead.
  const args = [...argv];
  if (!args.some((a) => a === '--url' || a.startsWith('--url=')) && deps.env['FEDSSL_URL'])
    args.unshift('--url', deps.env['FEDSSL_URL']);
  if (!args.some((a) => a === '--token' || a.startsWith('--token=')) && deps.env['FEDSSL_ADMIN_TOKEN']) {
    args.unshift('--token', deps.env['FEDSSL_ADMIN_TOKEN']);
  }
  const program = buildProgram(deps, (c) => (exit = c));
  try {
    await program.parseAsync(args, { from: 'user' });
    return exit;
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander already printed usage/help/errors; help and version exit 0.
      return e.exitCode;
    }
    deps.io.stderr(formatCliError(e));
    return e instanceof CliError ? e.exitCode : 1;
  }
}

if (require.main === module) {
  void runAdminCli(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
