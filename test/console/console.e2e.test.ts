import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SignedModelManifest } from '@fedssl/shared/protocol';
import {
  BINS,
  enrollAgent,
  generateSyntheticScans,
  runNode,
  startAgent,
  startCoordinator,
  type AgentHandle,
  type CoordinatorHandle,
  type ManagedProcess,
  type RunView,
} from '@fedssl/demo';

/**
 * The web console in headless Chromium against a live coordinator and two real site agents:
 * sign in, create an enrollment token that an agent then redeems, see the sites come online,
 * create a run with Advanced options (server defaults shown, only set fields sent, the stored
 * config read back; blur, DP and secure aggregation, out-of-range values refused in the API's
 * words before sending) and one through the plain form (each first with an error the API words),
 * start it, watch the loss chart grow as rounds are published (pausing and resuming in between),
 * download a model and check it against its manifest, a TF.js graph of another input size, read
 * the verified audit log, see pruned versions marked with their downloads disabled, cancel a run.
 * A screenshot of every page goes to `$TMPDIR/fedssl-console-screenshots/`.
 */
const CHROMIUM = '/usr/bin/chromium';
const SHOTS = path.join(tmpdir(), 'fedssl-console-screenshots');

describe('web console in headless Chromium, end to end', () => {
  let root: string;
  let coordinator: CoordinatorHandle;
  let browser: Browser;
  let page: Page;
  const processes: ManagedProcess[] = [];
  const agents: AgentHandle[] = [];
  const pageErrors: string[] = [];
  let runId: string;

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(
        `${CHROMIUM} is missing: apt-get install chromium (the console tests drive it headless)`,
      );
    }
    root = await mkdtemp(path.join(tmpdir(), 'fedssl-console-e2e-'));
    await rm(SHOTS, { recursive: true, force: true });
    await mkdir(SHOTS, { recursive: true });
    coordinator = await startCoordinator({ dataDir: path.join(root, 'coordinator') });
    processes.push(coordinator.process);
    for (const [i, name] of ['alpha', 'beta'].entries()) {
      await generateSyntheticScans({
        outDir: path.join(root, 'data', name),
        patients: 4,
        imagesPerPatient: 3,
        size: 40,
        seed: 70 + i,
        modality: 'ultrasound',
      });
    }
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
    const context = await browser.newContext({
      viewport: { width: 1280, height: 900 },
      acceptDownloads: true,
    });
    page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => {
      // Answers with 4xx are expected (wrong token, feature probes); anything else is not.
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) pageErrors.push(m.text());
    });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await Promise.all(processes.map((p) => p.stop()));
    if (root) await rm(root, { recursive: true, force: true });
  });

  const shot = (name: string) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

  it('refuses a wrong token with the API message, then signs in with an admin token', async () => {
    await page.goto(`${coordinator.url}/console`);
    await page.getByLabel('admin token').fill('fsa_wrong');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect
      .poll(() => page.locator('#signin .error').textContent())
      .toBe('invalid or revoked admin token');
    await shot('01-signin');

    await page.getByLabel('admin token').fill(coordinator.adminToken);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#sites-table').waitFor();
    await page.locator('#live.on').waitFor();
    expect(
      await page.evaluate(() =>
        (
          globalThis as unknown as { sessionStorage: { getItem(k: string): string | null } }
        ).sessionStorage.getItem('fedssl.console.token'),
      ),
    ).toBe(coordinator.adminToken);
  });

  it('creates an enrollment token that an agent redeems', async () => {
    await page.goto(`${coordinator.url}/console/#/tokens`);
    await page.getByLabel('site name').fill('alpha');
    await page.getByRole('button', { name: 'Create token' }).click();
    const token = await page.locator('#issued-token').inputValue();
    expect(token).toMatch(/^fse_/);
    await page.locator('#copy-token').click();
    await expect.poll(() => page.locator('#pending-table').textContent()).toContain('alpha');
    await shot('02-enrollment');

    // Hospital IT on site alpha, with the token copied from the console.
    const home = path.join(root, 'agents', 'alpha');
    await runNode(BINS.agent, ['init', '--home', home, '--data', path.join(root, 'data', 'alpha')]);
    await runNode(BINS.agent, ['enroll', '--home', home, '--coordinator', coordinator.url, '--token', token]);
    const sites = await coordinator.api.listSites();
    const alpha = sites.find((s) => s.name === 'alpha');
    expect(alpha?.status).toBe('enrolled');
    agents.push({ name: 'alpha', siteId: alpha!.id, home });

    // A second token, never handed out: expired early from the list; alpha's shows as used.
    await page.getByLabel('site name').fill('gamma');
    await page.getByRole('button', { name: 'Create token' }).click();
    const gammaRow = page.locator('#enrollment-tokens-table tr', { hasText: 'gamma' });
    await expect.poll(() => gammaRow.locator('td.state').textContent()).toBe('pending');
    await page.getByRole('button', { name: 'expire the token of gamma now' }).click();
    await expect.poll(() => gammaRow.locator('td.state').textContent()).toBe('expired');
    expect(await gammaRow.getByRole('button').count()).toBe(0);
    await page.reload();
    await expect
      .poll(() =>
        page.locator('#enrollment-tokens-table tr', { hasText: 'alpha' }).locator('td.state').textContent(),
      )
      .toBe('used');
    agents.push(
      await enrollAgent({
        coordinator,
        name: 'beta',
        home: path.join(root, 'agents', 'beta'),
        dataPath: path.join(root, 'data', 'beta'),
      }),
    );
  }, 120_000); // two agent CLIs and an enrollment, slow on a loaded machine

  it('shows both sites coming online live, without a reload', async () => {
    await page.goto(`${coordinator.url}/console/#/sites`);
    await page.locator('#sites-table').waitFor();
    const online = page.locator('#sites-table td.connection .badge.online');
    expect(await online.count()).toBe(0);
    for (const agent of agents) processes.push(await startAgent(agent));
    await expect.poll(() => online.count(), { timeout: 90_000 }).toBe(2);
    // The agents' status reports (backend, example count) arrive on the next refresh.
    await page.reload();
    await expect
      .poll(() => page.locator(`#sites-table tr[data-site="${agents[0]!.siteId}"] td.num`).textContent(), {
        timeout: 30_000,
      })
      .toBe('12');
    await shot('03-sites');
  }, 240_000);

  it('creates a run with Advanced options (fedavgm, kept optimizer state, batch norm), sending only what was set', async () => {
    const form = page.locator('#run-form');
    const firstOption = (name: string) => form.locator(`select[name="${name}"] option`).first().textContent();
    // Without the OpenAPI document the fields still work, naming no value; the next visit retries.
    await page.route('**/api/docs/openapi.json', (route) => route.abort());
    await page.goto(`${coordinator.url}/console/#/runs`);
    await form.waitFor();
    expect(await firstOption('model.norm')).toBe('server default');
    await page.unroute('**/api/docs/openapi.json');
    await page.goto(`${coordinator.url}/console/#/sites`);
    await page.locator('#sites-table').waitFor();
    await page.goto(`${coordinator.url}/console/#/runs`);
    await expect.poll(() => firstOption('model.norm')).toBe('server default: group');

    await form.locator('#run-advanced summary').click();
    // Empty fields show the server's defaults (read from its OpenAPI document) and are not sent.
    expect(await firstOption('model.norm')).toBe('server default: group');
    expect(await firstOption('training.localUpdate')).toBe('server default: replace');
    expect(await firstOption('training.siteOptimizerState')).toBe('server default: reset');
    expect(await firstOption('training.updateEncoding')).toBe('server default: float32');
    const field = (name: string) => form.locator(`[name="${name}"]`);
    expect(await field('training.fedemaScaler').getAttribute('placeholder')).toBe('server default: 1');
    // Only the chosen strategy's options are shown; their defaults follow the strategy.
    expect(await field('strategy.serverMomentum').isVisible()).toBe(false);
    expect(await field('strategy.clipNorm').getAttribute('placeholder')).toBe('server default: no clipping');
    await field('strategy').selectOption('fedadam');
    expect(await field('strategy.serverLearningRate').getAttribute('placeholder')).toBe(
      'server default: 0.01',
    );
    expect(await field('strategy.tau').isVisible()).toBe(true);
    await field('strategy').selectOption('fedavgm');
    expect(await field('strategy.serverLearningRate').getAttribute('placeholder')).toBe('server default: 1');
    expect(await field('strategy.serverMomentum').getAttribute('placeholder')).toBe('server default: 0.9');
    expect(await field('strategy.tau').isVisible()).toBe(false);

    await field('name').fill('console-advanced');
    await field('model.norm').selectOption('batch');
    await field('training.siteOptimizerState').selectOption('keep');
    await field('strategy.serverMomentum').fill('1');
    await form.getByRole('button', { name: 'Create run' }).click();
    await expect
      .poll(() => page.locator('#runs-status .error').textContent())
      .toBe('strategy.serverMomentum: Too big: expected number to be <1');

    await field('strategy.serverMomentum').fill('0.8');
    await shot('04a-runs-advanced');
    const [request] = await Promise.all([
      page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/api/v1/runs')),
      form.getByRole('button', { name: 'Create run' }).click(),
    ]);
    const sent = request.postDataJSON() as {
      strategy: unknown;
      model: Record<string, unknown>;
      training: Record<string, unknown>;
    };
    expect(sent.strategy).toEqual({ name: 'fedavgm', serverMomentum: 0.8 });
    expect(sent.model['norm']).toBe('batch');
    expect(sent.training['siteOptimizerState']).toBe('keep');
    for (const left of ['localUpdate', 'fedemaScaler', 'updateEncoding'])
      expect([left, left in sent.training]).toEqual([left, false]);

    await page.waitForURL(/#\/runs\/run-/);
    const advancedId = decodeURIComponent(page.url().split('#/runs/')[1]!);
    const { config: stored } = await coordinator.api.request<{
      config: { strategy: unknown; model: Record<string, unknown>; training: Record<string, unknown> };
    }>('GET', `/runs/${advancedId}`);
    expect(stored.strategy).toEqual({ name: 'fedavgm', serverLearningRate: 1, serverMomentum: 0.8 });
    expect(stored.model['norm']).toBe('batch');
    expect(stored.training).toMatchObject({
      siteOptimizerState: 'keep',
      localUpdate: 'replace',
      fedemaScaler: 1,
      updateEncoding: 'float32',
    });
    await expect
      .poll(() => page.locator('#run-advanced-summary').textContent())
      .toBe('norm batch · local update replace · site optimizer state keep · update encoding float32');
    expect(await page.locator('.card p.note').first().textContent()).toContain(
      'strategy fedavgm (serverLearningRate 1, serverMomentum 0.8)',
    );
  });

  it('creates a run with blur on, DP and secure aggregation from Advanced; refuses out-of-range values as the API does', async () => {
    await page.goto(`${coordinator.url}/console/#/runs`);
    const form = page.locator('#run-form');
    const field = (name: string) => form.locator(`[name="${name}"]`);
    const firstOption = (name: string) => form.locator(`select[name="${name}"] option`).first().textContent();
    const blur = 'training.augmentation.gaussianBlur';
    await expect.poll(() => firstOption(`${blur}.enabled`)).toBe('server default: off');
    await form.locator('#run-advanced summary').click();
    // Defaults from the OpenAPI document, and help that says why blur is off.
    expect(await firstOption('training.augmentation.randomResizedCrop.enabled')).toBe('server default: on');
    expect(await field('training.augmentation.multiCrop.localViews').getAttribute('placeholder')).toBe(
      'server default: 2',
    );
    expect(await field(`${blur}.sigmaMax`).getAttribute('placeholder')).toBe('server default: 2');
    expect(await field('privacy.dp.clipNorm').getAttribute('placeholder')).toBe('server default: no DP');
    expect(await firstOption('privacy.secureAggregation')).toBe('server default: off');
    expect(await form.locator('#opt-gaussianBlur .help').textContent()).toContain('hurt on ultrasound');

    const posts: string[] = [];
    const onRequest = (r: { method(): string; url(): string }) => {
      if (r.method() === 'POST' && r.url().endsWith('/api/v1/runs')) posts.push(r.url());
    };
    page.on('request', onRequest);
    await field('name').fill('console-privacy');
    await field(`${blur}.enabled`).selectOption('true');
    await field(`${blur}.probability`).fill('1.5');
    await field('training.augmentation.multiCrop.localViews').fill('2.5');
    await field('privacy.dp.clipNorm').fill('1');
    await form.getByRole('button', { name: 'Create run' }).click();
    const refused =
      'training.augmentation.multiCrop.localViews: Invalid input: expected int, received number; ' +
      'training.augmentation.gaussianBlur.probability: Too big: expected number to be <=1; ' +
      'privacy.dp.noiseMultiplier: Invalid input: expected number, received undefined; ' +
      'privacy.dp.delta: Invalid input: expected number, received undefined';
    await expect.poll(() => page.locator('#runs-status .error').textContent()).toBe(refused);
    // Refused in the browser, in the words the API uses for the same body.
    expect(posts).toEqual([]);
    expect(await field(`${blur}.probability`).getAttribute('aria-invalid')).toBe('true');
    const sameBody = {
      name: 'x',
      rounds: 1,
      minSites: 2,
      roundDeadlineSeconds: 60,
      strategy: 'fedavg',
      seed: 1,
      model: { arch: 'tiny', inputSize: 32 },
      training: {
        augmentation: { gaussianBlur: { enabled: true, probability: 1.5 }, multiCrop: { localViews: 2.5 } },
      },
      privacy: { dp: { clipNorm: 1 } },
    };
    await expect(coordinator.api.request('POST', '/runs', sameBody)).rejects.toThrow(
      `"message":"${refused}"`,
    );

    // A rule only the server knows (secure aggregation is FedAvg only) comes back verbatim.
    await field(`${blur}.probability`).fill('0.3');
    await field('training.augmentation.multiCrop.localViews').fill('');
    await field('privacy.dp.noiseMultiplier').fill('1.2');
    await field('privacy.dp.delta').fill('1e-5');
    await field('privacy.secureAggregation').selectOption('true');
    await field('strategy').selectOption('fedavgm');
    await form.getByRole('button', { name: 'Create run' }).click();
    await expect
      .poll(() => page.locator('#runs-status .error').textContent())
      .toBe(
        'strategy: secure aggregation supports fedavg without server clipping only (the coordinator sees just the sum, and fedavgm needs each update); clip on the sites with privacy.dp instead',
      );
    expect(posts).toHaveLength(1);
    page.off('request', onRequest);

    await field('strategy').selectOption('fedavg');
    await shot('04b-runs-augmentation-privacy');
    const [request] = await Promise.all([
      page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/api/v1/runs')),
      form.getByRole('button', { name: 'Create run' }).click(),
    ]);
    // Only what was set is sent: the other augmentations and blur's sigmaMax keep the server's defaults.
    const sent = request.postDataJSON() as { training: Record<string, unknown>; privacy: unknown };
    expect(sent.training['augmentation']).toEqual({ gaussianBlur: { enabled: true, probability: 0.3 } });
    expect(sent.privacy).toEqual({
      dp: { clipNorm: 1, noiseMultiplier: 1.2, delta: 1e-5 },
      secureAggregation: true,
    });

    await page.waitForURL(/#\/runs\/run-/);
    const id = decodeURIComponent(page.url().split('#/runs/')[1]!);
    const { config: stored } = await coordinator.api.request<{
      config: {
        training: { augmentation: Record<string, Record<string, unknown>> };
        privacy: unknown;
      };
    }>('GET', `/runs/${id}`);
    expect(stored.training.augmentation['gaussianBlur']).toEqual({
      enabled: true,
      probability: 0.3,
      sigmaMax: 2,
    });
    expect(stored.training.augmentation['colorJitter']).toMatchObject({ enabled: false });
    expect(stored.training.augmentation['multiCrop']).toMatchObject({ localViews: 2 });
    expect(stored.privacy).toEqual({
      dp: { clipNorm: 1, noiseMultiplier: 1.2, delta: 1e-5 },
      secureAggregation: true,
    });
    await expect
      .poll(() => page.locator('#run-options-summary').textContent())
      .toBe(
        'crop on (0.3–1) · flip on · multi-crop 2 local views · blur on · jitter off · grayscale off · mixup off · DP C 1 σ 1.2 δ 0.00001 · secure aggregation on',
      );
  });

  it('shows the API message for an invalid run, then creates and starts one from the form', async () => {
    await page.goto(`${coordinator.url}/console/#/runs`);
    const form = page.locator('#run-form');
    await form.locator('input[name="rounds"]').fill('0');
    await form.getByRole('button', { name: 'Create run' }).click();
    await expect
      .poll(() => page.locator('#runs-status .error').textContent())
      .toBe('rounds: Too small: expected number to be >=1');

    const values: Record<string, string> = {
      name: 'console-e2e',
      rounds: '2',
      minSites: '2',
      roundDeadlineSeconds: '300',
      seed: '3',
      'model.inputSize': '32',
      'model.widths': '8,16,32',
      'model.projectorHidden': '32',
      'model.projectionDim': '16',
      'model.metadataHidden': '16',
      'training.maxStepsPerRound': '2',
      'training.batchSize': '8',
      'training.learningRate': '0.01',
    };
    for (const [name, value] of Object.entries(values)) await form.locator(`[name="${name}"]`).fill(value);
    await shot('04-runs');
    await form.getByRole('button', { name: 'Create run' }).click();
    await page.waitForURL(/#\/runs\/run-/);
    runId = decodeURIComponent(page.url().split('#/runs/')[1]!);
    await page.locator('button[data-action="start"]').click();
    await page.locator('.badge.running').first().waitFor();
  });

  it('draws the loss chart and updates it live as each round is published', async () => {
    const points = () => page.locator('svg[data-chart="loss"]').getAttribute('data-points');
    // Pause from the run page while round 1 trains (on an idle machine a whole round of this tiny
    // run takes seconds, so pausing after it could find the run completed): the round still
    // publishes, no next round starts until resume; the badge follows over the socket.
    await page.locator('button[data-action="pause"]').click();
    await page.locator('.card .badge.paused').waitFor({ timeout: 60_000 });
    // Round 1: a global point plus one per site; round 2 adds as many, pushed over the socket.
    await expect.poll(points, { timeout: 240_000, interval: 500 }).toBe('3');
    await shot('05-run-round-1');
    await shot('05b-run-paused');
    await page.locator('button[data-action="resume"]').click();
    await page.locator('.card .badge.running, .card .badge.completed').first().waitFor({ timeout: 60_000 });
    await expect.poll(points, { timeout: 240_000, interval: 500 }).toBe('6');
    await page.locator('.card .badge.completed').waitFor({ timeout: 30_000 });
    expect(await page.locator('svg[data-chart="participation"] rect').count()).toBe(4);
    expect(await page.locator('svg[data-chart="time"] circle').count()).toBe(2);
    const run = await coordinator.api.getRun(runId);
    expect(run.state).toBe('completed');
    await shot('06-run-completed');
  }, 500_000);

  it('downloads a published model whose bytes match its signed manifest', async () => {
    const run: RunView = await coordinator.api.getRun(runId);
    const version = run.latestModelVersion!;
    await page.goto(`${coordinator.url}/console/#/models`);
    await page.locator(`button[data-manifest="${version}"]`).click();
    await expect.poll(() => page.locator('#manifest pre').textContent()).toContain(`"version": "${version}"`);
    await shot('07-models');
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.locator(`button[data-download="${version}"][data-format="weights"]`).click(),
    ]);
    expect(download.suggestedFilename()).toBe(`${version}.fsw`);
    const file = path.join(root, 'downloaded.fsw');
    await download.saveAs(file);
    const signed = await coordinator.api.request<SignedModelManifest>('GET', `/models/${version}`);
    const bytes = await readFile(file);
    expect(bytes.length).toBe(signed.manifest.weightsBytes);
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(signed.manifest.weightsSha256);
  });

  it('downloads the TF.js model, safetensors and model card with the same bytes as the API serves', async () => {
    const version = (await coordinator.api.getRun(runId)).latestModelVersion!;
    const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
    for (const [format, name] of [
      ['tfjs', `${version}-tfjs.zip`],
      ['safetensors', `${version}.safetensors`],
      ['card', `${version}.MODEL_CARD.md`],
    ] as const) {
      const [download] = await Promise.all([
        page.waitForEvent('download'),
        page.locator(`button[data-download="${version}"][data-format="${format}"]`).click(),
      ]);
      expect(download.suggestedFilename()).toBe(name);
      const file = path.join(root, name);
      await download.saveAs(file);
      const res = await fetch(`${coordinator.url}/api/v1/models/${version}/download/${format}`, {
        headers: { authorization: `Bearer ${coordinator.adminToken}` },
      });
      expect(res.status).toBe(200);
      const fromApi = new Uint8Array(await res.arrayBuffer());
      const fromConsole = new Uint8Array(await readFile(file));
      expect([format, fromConsole.length, sha(fromConsole)]).toEqual([format, fromApi.length, sha(fromApi)]);
      if (format === 'card')
        expect(Buffer.from(fromConsole).toString()).toContain(`# fedssl model ${version}`);
      else expect(fromConsole.length).toBeGreaterThan(1000);
    }

    // Another TF.js input size: the group-norm graph the API builds for it, named by the server.
    const size = page.locator(`input[data-input-size="${version}"]`);
    expect(await size.inputValue()).toBe('32');
    await size.fill('48');
    const [resized] = await Promise.all([
      page.waitForEvent('download'),
      page.locator(`button[data-download="${version}"][data-format="tfjs"]`).click(),
    ]);
    expect(resized.suggestedFilename()).toBe(`${version}-tfjs-48px.zip`);
    const resizedFile = path.join(root, 'resized-tfjs.zip');
    await resized.saveAs(resizedFile);
    const res = await fetch(`${coordinator.url}/api/v1/models/${version}/download/tfjs?inputSize=48`, {
      headers: { authorization: `Bearer ${coordinator.adminToken}` },
    });
    expect(res.status).toBe(200);
    const fromApi = new Uint8Array(await res.arrayBuffer());
    const fromConsole = new Uint8Array(await readFile(resizedFile));
    expect([fromConsole.length, sha(fromConsole)]).toEqual([fromApi.length, sha(fromApi)]);
    expect(Buffer.from(fromConsole).includes('[null,48,48,1]')).toBe(true);

    await size.fill('8');
    await page.locator(`button[data-download="${version}"][data-format="tfjs"]`).click();
    await expect
      .poll(() => page.locator('#models-status .error').textContent())
      .toBe(`TF.js of ${version}: TF.js export input size must be an integer from 16 to 512 pixels, got 8`);
    await shot('07b-models-downloads');
  });

  it('shows the audit log with a verified hash chain and the run control actions', async () => {
    await page.goto(`${coordinator.url}/console/#/audit`);
    await page.locator('#audit-verify .badge.ok').waitFor();
    const actions = await page.locator('#audit-table tr td:nth-child(4)').allTextContents();
    expect(actions).toEqual(expect.arrayContaining(['run.started', 'run.paused', 'run.resumed']));
    await shot('08-audit');
    expect(pageErrors).toEqual([]);
  });

  it('marks pruned model versions and disables their downloads; the kept version still downloads', async () => {
    const latest = (await coordinator.api.getRun(runId)).latestModelVersion!;
    const result = await coordinator.api.request<{ pruned: string[] }>('POST', '/models/prune', {
      dryRun: false,
      retain: 1,
    });
    expect(result.pruned.length).toBeGreaterThan(0);
    expect(result.pruned).not.toContain(latest);
    await page.goto(`${coordinator.url}/console/#/models`);
    await page.locator(`tr[data-version="${latest}"]`).waitFor();
    for (const version of result.pruned) {
      const row = page.locator(`tr[data-version="${version}"]`);
      expect(await row.getAttribute('class')).toBe('pruned');
      expect(await row.locator('.badge.pruned').textContent()).toMatch(/^pruned \S/);
      for (const format of ['weights', 'tfjs', 'safetensors']) {
        const b = row.locator(`button[data-download][data-format="${format}"]`);
        expect(await b.isDisabled(), format).toBe(true);
        expect(await b.getAttribute('title')).toMatch(/^Weights deleted by the retention policy on /);
      }
      // The signed manifest is kept, and the card is built from it alone: both still served.
      expect(await row.locator('button[data-manifest]').isDisabled()).toBe(false);
      expect(await row.locator('button[data-format="card"]').isDisabled()).toBe(false);
    }
    const kept = page.locator(`tr[data-version="${latest}"]`);
    expect(await kept.locator('.badge.available').count()).toBe(1);
    expect(await kept.locator('button[data-download]:disabled').count()).toBe(0);
    const pruned = result.pruned[0]!;
    const [card] = await Promise.all([
      page.waitForEvent('download'),
      page.locator(`button[data-download="${pruned}"][data-format="card"]`).click(),
    ]);
    expect(card.suggestedFilename()).toBe(`${pruned}.MODEL_CARD.md`);
    await shot('07c-models-pruned');
    expect(pageErrors).toEqual([]);
  });

  it('cancels a created run from the runs page', async () => {
    const created = await coordinator.api.createRun({
      name: 'to-cancel',
      rounds: 1,
      minSites: 1,
      roundDeadlineSeconds: 60,
      strategy: 'fedavg',
      seed: 1,
      model: { arch: 'tiny', inputSize: 32 },
      training: {},
    });
    await page.goto(`${coordinator.url}/console/#/runs`);
    await page.locator(`tr[data-run="${created.id}"] button[data-action="cancel"]`).click();
    await page.locator(`tr[data-run="${created.id}"] .badge.cancelled`).waitFor();
    expect((await coordinator.api.getRun(created.id)).state).toBe('cancelled');
  });

  it('shows the token expiry, and returns to sign-in with a clear message when the token is revoked or expires', async () => {
    const signInWith = async (token: string) => {
      await page.goto(`${coordinator.url}/console`);
      await page
        .locator('#signout')
        .click({ timeout: 5_000 })
        .catch(() => undefined);
      await page.getByLabel('admin token').fill(token);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.locator('#sites-table').waitFor();
    };
    const revoked = await coordinator.api.request<{ id: string; token: string }>('POST', '/admin-tokens', {
      name: 'to-revoke',
      role: 'viewer',
    });
    await signInWith(revoked.token);
    expect(await page.locator('#session').textContent()).toBe('to-revoke (viewer) · token does not expire');
    await coordinator.api.request('POST', `/admin-tokens/${revoked.id}/revoke`);
    await page.goto(`${coordinator.url}/console/#/runs`);
    await expect
      .poll(() => page.locator('#signin .error').textContent())
      .toBe('Signed out: invalid or revoked admin token. Sign in again with a valid token.');

    const expiresAt = new Date(Date.now() + 15_000).toISOString();
    const shortLived = await coordinator.api.request<{ id: string; token: string }>('POST', '/admin-tokens', {
      name: 'short-lived',
      role: 'viewer',
      expiresAt,
    });
    await signInWith(shortLived.token);
    expect(await page.locator('#session').getAttribute('data-expires-at')).toBe(expiresAt);
    expect(await page.locator('#session').textContent()).toMatch(/^short-lived \(viewer\) · token expires /);
    // Each page visit calls the API; once the token has expired the console signs out.
    let flip = false;
    await expect
      .poll(
        async () => {
          if (await page.locator('#signin').count()) return page.locator('#signin .error').textContent();
          flip = !flip;
          await page.goto(`${coordinator.url}/console/#/${flip ? 'runs' : 'models'}`);
          return null;
        },
        { timeout: 60_000, interval: 1_000 },
      )
      .toBe(
        `Signed out: admin token ${shortLived.id} expired at ${expiresAt}; ask an admin for a new one. Sign in again with a valid token.`,
      );
    await shot('09-signed-out');
  }, 120_000);
});
