#!/usr/bin/env node
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { AdminClient } from './admin-client';
import { CliError, formatCliError, processIo, type CliIo } from './io';
import { EXPORT_FORMATS, type ExportFormat } from '../models/export/export-model';
import { STRATEGY_NAMES } from '../strategies/config';
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
  runs
    .command('create')
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
      new Option(
        '--strategy <name>',
        'aggregation strategy (options at their defaults; use --config for more)',
      )
        .choices(STRATEGY_NAMES)
        .default('fedavg'),
    )
    .option('--clip-norm <C>', 'clip each update to L2 norm C before aggregating', num('--clip-norm'))
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
    .option(
      '--no-reuse-accepted-updates',
      'a retried round attempt asks every site to train again (default: updates accepted earlier are carried)',
    )
    .option('--config <file>', 'full run config as JSON (instead of the flags)')
    .action(async (o: Record<string, unknown>) => {
      let body: unknown;
      if (typeof o['config'] === 'string') {
        try {
          body = JSON.parse(readFileSync(o['config'], 'utf8'));
        } catch (e) {
          throw new CliError('RUN_CONFIG_INVALID', `cannot read ${o['config']}: ${(e as Error).message}`);
        }
      } else {
        for (const k of ['name', 'rounds', 'minSites'] as const) {
          if (o[k] === undefined)
            throw new CliError(
              'RUN_CONFIG_INVALID',
              `--${k === 'minSites' ? 'min-sites' : k} is required (or pass --config FILE.json)`,
            );
        }
        const training: Record<string, unknown> = {};
        if (o['batchSize'] !== undefined) training['batchSize'] = o['batchSize'];
        if (o['maxSteps'] !== undefined) training['maxStepsPerRound'] = o['maxSteps'];
        if (o['lambda'] !== undefined) training['metadataWeight'] = o['lambda'];
        if (o['localUpdate'] !== undefined) training['localUpdate'] = o['localUpdate'];
        if (o['fedemaScaler'] !== undefined) training['fedemaScaler'] = o['fedemaScaler'];
        if (o['siteOptimizerState'] !== undefined) training['siteOptimizerState'] = o['siteOptimizerState'];
        body = {
          name: o['name'],
          rounds: o['rounds'],
          minSites: o['minSites'],
          roundDeadlineSeconds: o['deadline'],
          strategy:
            o['clipNorm'] === undefined ? o['strategy'] : { name: o['strategy'], clipNorm: o['clipNorm'] },
          model: { arch: o['arch'], inputSize: o['size'], norm: o['norm'] },
          training,
          seed: o['seed'],
          ...(o['reuseAcceptedUpdates'] === false ? { reuseAcceptedUpdates: false } : {}),
        };
      }
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
