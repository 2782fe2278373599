import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';

/**
 * Static checks of deploy/ that need no Docker engine: the compose file, the Dockerfiles, the
 * Helm chart and the systemd unit. Where the real tool is installed (docker compose plugin,
 * helm, systemd-analyze) it is used too; each test name says which check ran.
 */
const ROOT = path.resolve(__dirname, '..', '..');
const DEPLOY = path.join(ROOT, 'deploy');
const read = (p: string) => readFileSync(path.join(ROOT, p), 'utf8');

function has(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return r.status === 0;
}
const HAS_COMPOSE = has('docker', ['compose', 'version']);
const HAS_HELM = has('helm', ['version']);
const HAS_SYSTEMD_ANALYZE = has('systemd-analyze', ['--version']);

interface ComposeService {
  build?: { context: string; dockerfile: string };
  image?: string;
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test?: unknown; disable?: boolean };
  environment?: Record<string, string>;
  volumes?: string[];
  command?: string[];
  entrypoint?: string[];
  user?: string;
}
interface ComposeFile {
  services: Record<string, ComposeService>;
  volumes: Record<string, unknown>;
}

describe('deploy/compose.yaml', () => {
  // The YAML merge key (<<: *agent) is resolved by the parser, as docker compose does.
  const compose = parseYaml(read('deploy/compose.yaml'), { merge: true }) as ComposeFile;
  const agents = ['agent-st-mary', 'agent-riverside', 'agent-northgate'];

  it('has the coordinator, PostgreSQL, a one-shot setup and three agents', () => {
    expect(Object.keys(compose.services).sort()).toEqual(
      ['postgres', 'coordinator', 'setup', ...agents].sort(),
    );
  });

  it('builds from Dockerfiles that exist, and pins every image tag', () => {
    for (const [name, svc] of Object.entries(compose.services)) {
      if (svc.build) {
        const dockerfile = path.resolve(DEPLOY, svc.build.context, svc.build.dockerfile);
        expect(existsSync(dockerfile), `${name}: ${dockerfile}`).toBe(true);
      }
      expect(svc.image, name).toMatch(/^[\w./-]+:[\w.-]+$/);
      expect(svc.image, name).not.toMatch(/:latest$/);
    }
  });

  it('health-checks PostgreSQL and the coordinator (on /api/v1/healthz) and orders the start on them', () => {
    expect(JSON.stringify(compose.services['postgres']!.healthcheck!.test)).toContain('pg_isready');
    expect(JSON.stringify(compose.services['coordinator']!.healthcheck!.test)).toContain('/api/v1/healthz');
    expect(compose.services['coordinator']!.depends_on).toEqual({
      postgres: { condition: 'service_healthy' },
    });
    expect(compose.services['coordinator']!.environment!['FEDSSL_DATABASE_URL']).toMatch(
      /^postgres:\/\/[^@]+@postgres:5432\//,
    );
    for (const a of agents) {
      expect(compose.services[a]!.depends_on, a).toEqual({
        coordinator: { condition: 'service_healthy' },
        setup: { condition: 'service_completed_successfully' },
      });
    }
  });

  it('starts each agent on its own generated data with the test suite’s sequence (generate, init, enroll, run)', () => {
    const homes = new Set<string>();
    for (const a of agents) {
      const svc = compose.services[a]!;
      const script = svc.command!.join('\n');
      const steps = [
        'node /app/demo/dist/generate-data.js',
        'agent-cli.js init',
        'agent-cli.js enroll',
        'exec node /app/site-agent/dist/cli/agent-cli.js run',
      ].map((s) => script.indexOf(s));
      expect(steps.every((i) => i >= 0) && steps.every((i, k) => k === 0 || i > steps[k - 1]!), a).toBe(true);
      expect(svc.environment!['SITE_NAME']).toBe(a.replace(/^agent-/, ''));
      const home = svc.volumes!.find((v) => v.endsWith(':/var/lib/fedssl-agent'))!;
      homes.add(home);
      expect(Object.keys(compose.volumes)).toContain(home.split(':')[0]);
    }
    expect(homes.size).toBe(3);
    const setup = compose.services['setup']!.command!.join('\n');
    for (const a of agents) expect(setup).toContain(a.replace(/^agent-/, ''));
    expect(setup).toContain('bootstrap-admin');
  });

  it(
    HAS_COMPOSE
      ? 'is accepted by `docker compose config`'
      : 'parses as YAML (the docker compose plugin is not installed here, so `docker compose config` did not run)',
    () => {
      if (HAS_COMPOSE) {
        execFileSync('docker', ['compose', '-f', path.join(DEPLOY, 'compose.yaml'), 'config', '-q'], {
          stdio: 'pipe',
        });
      }
      expect(parseAllDocuments(read('deploy/compose.yaml')).every((d) => d.errors.length === 0)).toBe(true);
    },
  );
});

describe('deploy/docker Dockerfiles', () => {
  const files = readdirSync(path.join(DEPLOY, 'docker')).filter((f) => f.endsWith('.Dockerfile'));

  it('are the coordinator, the CPU agent and the GPU agent', () => {
    expect(files.sort()).toEqual([
      'coordinator.Dockerfile',
      'site-agent-gpu.Dockerfile',
      'site-agent.Dockerfile',
    ]);
  });

  for (const file of ['coordinator.Dockerfile', 'site-agent.Dockerfile', 'site-agent-gpu.Dockerfile']) {
    it(`${file}: pinned bases, non-root final stage, health check, entrypoint, sources that exist`, () => {
      const text = read(`deploy/docker/${file}`).replace(/\\\n/g, ' ');
      const lines = text.split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));
      const args = new Map(
        lines
          .map((l) => /^ARG\s+(\w+)=(\S+)/.exec(l))
          .filter((m): m is RegExpExecArray => m !== null)
          .map((m) => [m[1]!, m[2]!]),
      );
      const stages = lines.flatMap((l, i) => (/^FROM\s/i.test(l) ? [i] : []));
      expect(stages.length).toBeGreaterThanOrEqual(2);
      for (const i of stages) {
        let image = /^FROM\s+(\S+)/i.exec(lines[i]!)![1]!;
        image = image.replace(/\$\{(\w+)\}/g, (_m, n: string) => args.get(n) ?? '');
        // A full version tag (x.y.z…) or a digest; never latest or a bare major.
        expect(image, `${file}: FROM ${image}`).toMatch(/(@sha256:[0-9a-f]{64}|:\d+\.\d+\.\d+[\w.-]*)$/);
      }
      const final = lines.slice(stages[stages.length - 1]);
      const users = final.filter((l) => /^USER\s/i.test(l)).map((l) => l.split(/\s+/)[1]);
      expect(users.length, `${file}: USER in the final stage`).toBeGreaterThan(0);
      expect(['root', '0', '0:0']).not.toContain(users[users.length - 1]);
      expect(
        final.some((l) => /^HEALTHCHECK\s+.*CMD\s/i.test(l)),
        `${file}: HEALTHCHECK`,
      ).toBe(true);
      expect(final.some((l) => /^ENTRYPOINT\s/i.test(l))).toBe(true);
      // Every COPY from the build context names something in the repository.
      for (const l of lines.filter((x) => /^COPY\s/i.test(x) && !/--from=/.test(x))) {
        const parts = l.trim().split(/\s+/).slice(1);
        for (const src of parts.slice(0, -1))
          expect(existsSync(path.join(ROOT, src)), `${file}: ${src}`).toBe(true);
      }
    });
  }

  it('coordinator image health-checks /api/v1/healthz and ships the console files', () => {
    const text = read('deploy/docker/coordinator.Dockerfile');
    expect(text).toContain("'/api/v1/healthz'");
    expect(text).toContain(
      'COPY --from=build /src/coordinator/src/console/public coordinator/src/console/public',
    );
    expect(existsSync(path.join(ROOT, 'coordinator/src/console/public/index.html'))).toBe(true);
  });

  it('GPU agent builds on CUDA 11.2 + cuDNN 8 and requires tfjs-node-gpu to load', () => {
    const text = read('deploy/docker/site-agent-gpu.Dockerfile');
    expect(text).toMatch(/ARG CUDA_IMAGE=nvidia\/cuda:11\.2\.\d+-cudnn8-runtime-/);
    expect(text).toContain("require('@tensorflow/tfjs-node-gpu')");
    for (const v of [
      'TFJS_NODE_CDN_STORAGE',
      'TFJS_NODE_BASE_URI',
      'npm_config_tfjs_binding_binary_host_mirror',
    ])
      expect(text).toContain(`ARG ${v}`);
  });
});

describe('deploy/helm/fedssl-coordinator', () => {
  const chart = path.join(DEPLOY, 'helm', 'fedssl-coordinator');

  if (HAS_HELM) {
    it('passes `helm lint` and `helm template` renders a Deployment, Service and PVC with probes', () => {
      execFileSync('helm', ['lint', chart], { stdio: 'pipe' });
      const out = execFileSync('helm', ['template', 't', chart], { encoding: 'utf8' });
      const docs = parseAllDocuments(out).map((d) => d.toJS() as { kind?: string } | null);
      const kinds = docs.flatMap((d) => (d?.kind ? [d.kind] : [])).sort();
      expect(kinds).toEqual(['Deployment', 'PersistentVolumeClaim', 'Service']);
      expect(out).toContain('path: /api/v1/healthz');
      expect(out).toContain('name: FEDSSL_DATABASE_URL');
    });
  } else {
    it('YAML parsed and required keys checked (helm is not installed here, so the chart was not rendered)', () => {
      const meta = parseYaml(readFileSync(path.join(chart, 'Chart.yaml'), 'utf8')) as Record<string, unknown>;
      expect(meta).toMatchObject({ apiVersion: 'v2', name: 'fedssl-coordinator', type: 'application' });
      expect(meta['version']).toMatch(/^\d+\.\d+\.\d+$/);
      const values = parseYaml(readFileSync(path.join(chart, 'values.yaml'), 'utf8')) as {
        database: { existingSecret: string; key: string };
        keys: { existingSecret: string; key: string };
        persistence: { enabled: boolean; size: string };
        resources: { requests: Record<string, string>; limits: Record<string, string> };
        livenessProbe: { httpGet: { path: string } };
        readinessProbe: { httpGet: { path: string } };
        podSecurityContext: { runAsNonRoot: boolean };
      };
      expect(values.database.existingSecret).toBeTruthy();
      expect(values.keys.key).toBe('coordinator-keys.json');
      expect(values.persistence).toMatchObject({ enabled: true });
      expect(Object.keys(values.resources.requests).sort()).toEqual(['cpu', 'memory']);
      expect(Object.keys(values.resources.limits).sort()).toEqual(['cpu', 'memory']);
      expect(values.livenessProbe.httpGet.path).toBe('/api/v1/healthz');
      expect(values.readinessProbe.httpGet.path).toBe('/api/v1/healthz');
      expect(values.podSecurityContext.runAsNonRoot).toBe(true);
      const templates = readdirSync(path.join(chart, 'templates'));
      expect(templates).toEqual(
        expect.arrayContaining(['deployment.yaml', 'service.yaml', 'pvc.yaml', '_helpers.tpl', 'NOTES.txt']),
      );
      const deployment = readFileSync(path.join(chart, 'templates', 'deployment.yaml'), 'utf8');
      for (const needle of [
        'name: FEDSSL_DATABASE_URL',
        'secretKeyRef:',
        '.Values.database.existingSecret',
        'persistentVolumeClaim:',
        'mountPath: /var/lib/fedssl',
        'mountPath: /var/lib/fedssl/keys/coordinator-keys.json',
        'livenessProbe:',
        'readinessProbe:',
        'resources:',
      ])
        expect(deployment, needle).toContain(needle);
      // Every template helper that is used is defined.
      const helpers = readFileSync(path.join(chart, 'templates', '_helpers.tpl'), 'utf8');
      const used = new Set(
        templates
          .map((t) => readFileSync(path.join(chart, 'templates', t), 'utf8'))
          .flatMap((t) => [...t.matchAll(/include "([\w.-]+)"/g)].map((m) => m[1]!)),
      );
      for (const name of used) expect(helpers, name).toContain(`define "${name}"`);
    });
  }
});

describe('deploy/systemd', () => {
  const unit = read('deploy/systemd/fedssl-agent.service');
  const directive = (key: string) =>
    unit
      .split('\n')
      .filter((l) => l.startsWith(`${key}=`))
      .map((l) => l.slice(key.length + 1));

  it('runs the agent as its own user with a restart policy, journald logs and a private umask', () => {
    expect(directive('User')).toEqual(['fedssl']);
    expect(directive('Restart')).toEqual(['on-failure']);
    expect(directive('StandardOutput')).toEqual(['journal']);
    expect(directive('StandardError')).toEqual(['journal']);
    expect(directive('UMask')).toEqual(['0077']);
    expect(directive('NoNewPrivileges')).toEqual(['yes']);
    expect(directive('ReadWritePaths')).toEqual(['/var/lib/fedssl-agent']);
    expect(directive('ExecStart')[0]).toMatch(/agent-cli\.js run --home \/var\/lib\/fedssl-agent$/);
  });

  it(
    HAS_SYSTEMD_ANALYZE
      ? 'unit passes `systemd-analyze verify`'
      : 'unit parsed only (systemd-analyze is not installed here)',
    () => {
      if (HAS_SYSTEMD_ANALYZE) {
        const r = spawnSync(
          'systemd-analyze',
          ['verify', path.join(DEPLOY, 'systemd', 'fedssl-agent.service')],
          {
            encoding: 'utf8',
          },
        );
        // Unknown keys are only warnings for systemd; treat any output about the unit as a failure.
        expect(
          `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.includes('fedssl-agent.service')),
        ).toEqual([]);
        expect(r.status).toBe(0);
      }
      expect(unit).toMatch(/^\[Unit\][\s\S]*^\[Service\][\s\S]*^\[Install\]/m);
    },
  );

  it('install script is valid sh, creates the user and a 0700 home, and makes keys 0600', () => {
    const script = path.join(DEPLOY, 'systemd', 'install-agent.sh');
    execFileSync('sh', ['-n', script]);
    const text = readFileSync(script, 'utf8');
    expect(text).toContain('useradd --system');
    expect(text).toMatch(/install -d -o fedssl -g fedssl -m 0700 "\$HOME_DIR"/);
    expect(text).toContain('-exec chmod 0600 {} +');
    expect(text).toContain('systemctl enable fedssl-agent.service');
  });
});
