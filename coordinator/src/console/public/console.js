// fedssl web console: a plain script (no bundler), talking only to the public REST API under
// /api/v1 and listening to the /console socket.io namespace for live updates. Everything the
// API returns is put into the page with textContent / DOM calls, never as HTML.
/* global Node, URL, document, fetch, io, location, navigator, sessionStorage, setTimeout, window */
'use strict';

(function () {
  const API = '/api/v1';
  const TOKEN_KEY = 'fedssl.console.token';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const COLORS = ['#2456c9', '#d1495b', '#1a7f37', '#b25e00', '#7b3fb6', '#00798c', '#6d6875', '#edae49'];

  const main = document.getElementById('main');
  const nav = document.getElementById('nav');
  const live = document.getElementById('live');
  const signoutButton = document.getElementById('signout');
  const sessionInfo = document.getElementById('session');

  /** What the signed-in coordinator answers (probed once: endpoints other engineers add). */
  const features = { runControl: false, audit: false };
  let socket = null;
  /** Re-renders the current page when a live event concerns it. */
  let onLive = null;

  // ------------------------------------------------------------------ DOM helpers

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k in el && k !== 'list' && typeof v !== 'string') el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    append(el, children);
    return el;
  }
  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  /** Like replaceChildren, but flattens arrays and skips null/false (as {@link h} does). */
  function fill(el, ...children) {
    el.replaceChildren();
    return append(el, children);
  }
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {}))
      if (v !== undefined && v !== null) el.setAttribute(k, String(v));
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const badge = (text) => h('span', { class: `badge ${text}` }, text);
  const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : '—');
  const fmtNum = (n, digits = 4) =>
    n === null || n === undefined || Number.isNaN(n)
      ? '—'
      : Number(n)
          .toPrecision(digits)
          .replace(/\.?0+$/, '');
  function fmtBytes(n) {
    if (n === null || n === undefined) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
  }
  function toast(message) {
    const box = document.getElementById('toast');
    const item = h('div', {}, message);
    box.append(item);
    setTimeout(() => item.remove(), 4000);
  }
  function errorBox(message) {
    return h('div', { class: 'error', role: 'alert' }, message);
  }
  function page(title, ...children) {
    fill(main, h('h1', {}, title), ...children);
  }

  // ------------------------------------------------------------------ API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  /** Calls the REST API; a non-2xx answer throws ApiError with the API's own code and message. */
  async function api(method, route, body, opts = {}) {
    const res = await fetch(API + route, {
      method,
      headers: {
        authorization: `Bearer ${opts.token || token()}`,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (opts.raw && res.ok) return res;
    const text = await res.text();
    let parsed;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!res.ok) {
      const err =
        parsed && parsed.error
          ? parsed.error
          : { code: `HTTP_${res.status}`, message: text || res.statusText };
      // An expired or revoked session token: back to sign-in, saying why.
      if (res.status === 401 && !opts.token)
        signOut(`Signed out: ${err.message}. Sign in again with a valid token.`);
      throw new ApiError(res.status, err.code, err.message);
    }
    return parsed;
  }

  /** True when the route exists (any answer other than Nest's "no such route" 404). */
  async function answers(method, route) {
    try {
      await api(method, route, method === 'POST' ? {} : undefined);
      return true;
    } catch (e) {
      return !(e instanceof ApiError && e.status === 404 && e.code === 'NOT_FOUND');
    }
  }

  async function probeFeatures() {
    const [runControl, audit] = await Promise.all([
      answers('POST', '/runs/run-console-probe/pause'),
      answers('GET', '/audit?limit=1'),
    ]);
    features.runControl = runControl;
    features.audit = audit;
  }

  // ------------------------------------------------------------------ live updates

  function connectLive() {
    if (socket || typeof io !== 'function') {
      if (typeof io !== 'function') live.textContent = 'no live updates';
      return;
    }
    socket = io('/console', { auth: { token: token() }, transports: ['websocket', 'polling'] });
    socket.on('connect', () => {
      live.textContent = 'live';
      live.className = 'live on';
    });
    socket.on('disconnect', () => {
      live.textContent = 'offline';
      live.className = 'live off';
    });
    socket.on('connect_error', (err) => {
      live.textContent = 'offline';
      live.className = 'live off';
      live.title = err.message;
    });
    for (const ev of ['site:online', 'site:offline', 'site:revoked', 'run:state', 'round:state']) {
      socket.on(ev, (payload) => {
        if (onLive) onLive(ev, payload);
      });
    }
  }

  function disconnectLive() {
    if (socket) socket.disconnect();
    socket = null;
    live.textContent = 'offline';
    live.className = 'live off';
  }

  // ------------------------------------------------------------------ sign-in

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    disconnectLive();
    nav.hidden = true;
    signoutButton.hidden = true;
    sessionInfo.hidden = true;
    renderSignIn(message);
  }

  function renderSignIn(message) {
    onLive = null;
    const input = h('input', {
      type: 'password',
      name: 'token',
      autocomplete: 'off',
      placeholder: 'fsa_…',
      required: true,
      'aria-label': 'admin token',
    });
    const status = h('div');
    if (message) status.append(errorBox(message));
    const form = h(
      'form',
      {
        class: 'card signin',
        id: 'signin',
        onsubmit: async (ev) => {
          ev.preventDefault();
          fill(status);
          const t = input.value.trim();
          try {
            await api('GET', '/sites', undefined, { token: t });
          } catch (e) {
            status.append(errorBox(e.message));
            return;
          }
          sessionStorage.setItem(TOKEN_KEY, t);
          await enter();
        },
      },
      h('h1', {}, 'Sign in'),
      h('p', { class: 'note' }, 'Paste an admin, operator or viewer token. It is kept for this tab only.'),
      h('label', {}, 'Token', input),
      h('div', { class: 'actions' }, h('button', { class: 'primary', type: 'submit' }, 'Sign in')),
      status,
    );
    fill(main, form);
  }

  /** Who is signed in and until when (`GET /admin-tokens/me`; absent on older coordinators). */
  async function showSession() {
    try {
      const me = await api('GET', '/admin-tokens/me');
      const expiry = me.expiresAt ? `expires ${fmtTime(me.expiresAt)}` : 'does not expire';
      sessionInfo.textContent = `${me.name} (${me.role}) · token ${expiry}`;
      sessionInfo.dataset.expiresAt = me.expiresAt || '';
      sessionInfo.hidden = false;
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
    }
  }

  async function enter() {
    nav.hidden = false;
    signoutButton.hidden = false;
    await Promise.all([probeFeatures(), showSession()]);
    connectLive();
    if (!location.hash || location.hash === '#/') location.hash = '#/sites';
    else await route();
  }

  // ------------------------------------------------------------------ pages

  async function sitesPage() {
    const table = h('table', { id: 'sites-table' });
    const status = h('div');
    async function load() {
      const sites = await api('GET', '/sites');
      fill(
        table,
        h(
          'tr',
          {},
          ['Site', 'Status', 'Connection', 'Last seen', 'Agent', 'Backend', 'Examples', ''].map((c) =>
            h('th', {}, c),
          ),
        ),
        sites.length === 0
          ? h('tr', {}, h('td', { colspan: 8, class: 'note' }, 'No sites yet: create an enrollment token.'))
          : null,
        sites.map((site) =>
          h(
            'tr',
            { 'data-site': site.id },
            h('td', {}, h('div', {}, site.name), h('code', { class: 'note' }, site.id)),
            h('td', {}, badge(site.status)),
            h('td', { class: 'connection' }, badge(site.online ? 'online' : 'offline')),
            h('td', {}, fmtTime(site.lastSeenAt)),
            h('td', {}, site.agentVersion || '—'),
            h('td', {}, site.backend || '—'),
            h('td', { class: 'num' }, site.exampleCount ?? '—'),
            h(
              'td',
              {},
              site.status === 'revoked'
                ? h('span', { class: 'note' }, site.revokedReason || '')
                : revokeForm(site),
            ),
          ),
        ),
      );
    }
    function revokeForm(site) {
      const reason = h('input', {
        placeholder: 'reason',
        'aria-label': `reason to revoke ${site.name}`,
        size: 12,
      });
      return h(
        'form',
        {
          class: 'revoke',
          onsubmit: async (ev) => {
            ev.preventDefault();
            fill(status);
            try {
              await api('POST', `/sites/${encodeURIComponent(site.id)}/revoke`, { reason: reason.value });
              toast(`${site.name} revoked`);
              await load();
            } catch (e) {
              status.append(errorBox(e.message));
            }
          },
        },
        reason,
        h('button', { class: 'danger', type: 'submit' }, 'Revoke'),
      );
    }
    page('Sites', status, table);
    await load();
    onLive = (ev) => {
      if (ev.startsWith('site:')) void load().catch(() => {});
    };
  }

  async function tokensPage() {
    const siteName = h('input', {
      name: 'siteName',
      required: true,
      'aria-label': 'site name',
      placeholder: 'st-mary',
    });
    const hours = h('input', { name: 'expiresInHours', type: 'number', value: '24', min: '1', step: '1' });
    const result = h('div', { id: 'token-result' });
    const pending = h('table', { id: 'pending-table' });
    const issuedTable = h('table', { id: 'enrollment-tokens-table' });
    const tokensStatus = h('div');
    async function loadTokens() {
      const list = await api('GET', '/enrollment-tokens');
      fill(
        issuedTable,
        h(
          'tr',
          {},
          ['Site', 'State', 'Created', 'Expires', ''].map((c) => h('th', {}, c)),
        ),
        list.length === 0 ? h('tr', {}, h('td', { colspan: 5, class: 'note' }, 'No tokens yet.')) : null,
        list.map((t) =>
          h(
            'tr',
            { 'data-site': t.siteId },
            h('td', {}, h('div', {}, t.siteName), h('code', { class: 'note' }, t.siteId)),
            h('td', { class: 'state' }, badge(t.state)),
            h('td', {}, fmtTime(t.createdAt)),
            h('td', {}, fmtTime(t.expiresAt)),
            h(
              'td',
              {},
              t.state === 'pending'
                ? h(
                    'button',
                    {
                      type: 'button',
                      class: 'danger',
                      'aria-label': `expire the token of ${t.siteName} now`,
                      onclick: () => expire(t),
                    },
                    'Expire now',
                  )
                : null,
            ),
          ),
        ),
      );
    }
    async function expire(t) {
      fill(tokensStatus);
      try {
        await api('POST', `/enrollment-tokens/${encodeURIComponent(t.siteId)}/expire`);
        toast(`Token of ${t.siteName} expired`);
        await loadTokens();
      } catch (e) {
        tokensStatus.append(errorBox(e.message));
      }
    }
    async function loadPending() {
      const sites = (await api('GET', '/sites')).filter((x) => x.status === 'pending');
      fill(
        pending,
        h(
          'tr',
          {},
          ['Site', 'Created', 'Site id'].map((c) => h('th', {}, c)),
        ),
        sites.length === 0 ? h('tr', {}, h('td', { colspan: 3, class: 'note' }, 'None waiting.')) : null,
        sites.map((x) =>
          h(
            'tr',
            {},
            h('td', {}, x.name),
            h('td', {}, fmtTime(x.createdAt)),
            h('td', {}, h('code', {}, x.id)),
          ),
        ),
      );
    }
    const form = h(
      'form',
      {
        class: 'card',
        id: 'token-form',
        novalidate: true,
        onsubmit: async (ev) => {
          ev.preventDefault();
          fill(result);
          const body = { siteName: siteName.value };
          if (hours.value !== '') body.expiresInSeconds = Math.round(Number(hours.value) * 3600);
          try {
            const issued = await api('POST', '/enrollment-tokens', body);
            const field = h('input', {
              readonly: true,
              value: issued.token,
              id: 'issued-token',
              'aria-label': 'enrollment token',
            });
            fill(
              result,
              h(
                'div',
                { class: 'card' },
                h(
                  'p',
                  {},
                  'One-time token for ',
                  h('b', {}, issued.siteName),
                  ` (site ${issued.siteId}), valid until ${fmtTime(issued.expiresAt)}. It is shown once.`,
                ),
                h(
                  'div',
                  { class: 'secret' },
                  field,
                  h('button', { type: 'button', id: 'copy-token', onclick: () => copy(field) }, 'Copy'),
                ),
                h(
                  'p',
                  { class: 'note' },
                  'On the hospital server: ',
                  h(
                    'code',
                    {},
                    `fedssl-agent enroll --home /srv/fedssl-agent --coordinator ${location.origin} --token <token>`,
                  ),
                ),
              ),
            );
            await Promise.all([loadPending(), loadTokens()]);
          } catch (e) {
            result.append(errorBox(e.message));
          }
        },
      },
      h(
        'div',
        { class: 'grid' },
        h('label', {}, 'Site name', siteName),
        h('label', {}, 'Expires in (hours)', hours),
      ),
      h('div', { class: 'actions' }, h('button', { class: 'primary', type: 'submit' }, 'Create token')),
    );
    page(
      'Enrollment tokens',
      form,
      result,
      h('h2', {}, 'Sites waiting for enrollment'),
      pending,
      h('h2', {}, 'Issued tokens'),
      tokensStatus,
      issuedTable,
    );
    await Promise.all([loadPending(), loadTokens()]);
    onLive = (ev) => {
      // An agent redeeming a token changes its state and leaves the waiting list.
      if (ev.startsWith('site:')) void Promise.all([loadPending(), loadTokens()]).catch(() => {});
    };
  }

  async function copy(field) {
    field.select();
    try {
      await navigator.clipboard.writeText(field.value);
      toast('Token copied');
    } catch {
      // Clipboard API needs a secure context; the selected text can still be copied by hand.
      toast('Press Ctrl+C to copy the selected token');
    }
  }

  // -------------------------------- runs

  function runActions(run, after, status) {
    const act = (label, path, cls) =>
      h(
        'button',
        {
          type: 'button',
          class: cls,
          'data-action': path,
          onclick: async () => {
            fill(status);
            try {
              await api('POST', `/runs/${encodeURIComponent(run.id)}/${path}`);
              toast(`${run.name}: ${path}`);
              await after();
            } catch (e) {
              status.append(errorBox(e.message));
            }
          },
        },
        label,
      );
    const buttons = [];
    if (run.state === 'created') buttons.push(act('Start', 'start', 'primary'));
    if (features.runControl) {
      if (run.state === 'running') buttons.push(act('Pause', 'pause'));
      if (run.state === 'paused') buttons.push(act('Resume', 'resume', 'primary'));
      if (['created', 'running', 'paused'].includes(run.state))
        buttons.push(act('Cancel', 'cancel', 'danger'));
    }
    return buttons;
  }

  function progress(run, published) {
    const pct = Math.min(100, Math.round((100 * published) / run.config.rounds));
    const bar = h('span', {});
    bar.style.width = `${pct}%`;
    return h('span', {}, h('span', { class: 'progress' }, bar), ` ${published}/${run.config.rounds}`);
  }

  /** Rounds published so far: versions are named `<runId>.r<round>` (r0 = initial weights). */
  function publishedRounds(run) {
    const m = /\.r(\d+)$/.exec(run.latestModelVersion || '');
    return m ? Number(m[1]) : 0;
  }

  const numberField = (name, label, value, extra = {}) =>
    h('label', {}, label, h('input', { name, type: 'number', value: String(value), step: 'any', ...extra }));

  const STRATEGIES = ['fedavg', 'fedavgm', 'fedadam', 'median', 'trimmed-mean'];

  /**
   * The run body's schema as this coordinator documents it (`POST /runs` in its OpenAPI
   * document, built from the schemas it validates with), read once: the Advanced fields show
   * its defaults and descriptions, so they cannot drift from the server. Null when the
   * document cannot be read; the fields then just say "server default".
   */
  let runSchemaPromise = null;
  function runSchema() {
    if (!runSchemaPromise) {
      runSchemaPromise = fetch('/api/docs/openapi.json')
        .then((res) => (res.ok ? res.json() : null))
        .then((doc) => {
          const body = doc && doc.paths['/api/v1/runs'].post.requestBody.content['application/json'].schema;
          if (!body) return null;
          const variants = (body.properties.strategy.anyOf || []).flatMap((s) => s.oneOf || []);
          return {
            root: body.properties,
            strategies: Object.fromEntries(variants.map((v) => [v.properties.name.const, v.properties])),
          };
        })
        .catch(() => null)
        .then((schema) => {
          // A failed read is not remembered: the next visit of the Runs page tries again.
          if (!schema) runSchemaPromise = null;
          return schema;
        });
    }
    return runSchemaPromise;
  }

  /** What an absent field means where the schema has no default to show. */
  const ABSENT_MEANS = {
    'training.siteOptimizerState': 'reset',
    'strategy.clipNorm': 'no clipping',
    'privacy.dp.clipNorm': 'no DP',
    'privacy.dp.noiseMultiplier': 'no DP',
    'privacy.dp.delta': 'no DP',
  };

  /** Advanced run options; `strategies`: the strategies an option belongs to. */
  const ADVANCED = [
    { name: 'model.norm', label: 'Normalization', options: ['group', 'batch'] },
    { name: 'training.localUpdate', label: 'Local update', options: ['replace', 'fedema'] },
    { name: 'training.fedemaScaler', label: 'FedEMA scaler λ' },
    { name: 'training.siteOptimizerState', label: 'Site optimizer state', options: ['reset', 'keep'] },
    { name: 'training.updateEncoding', label: 'Update encoding', options: ['float32', 'float16', 'int8'] },
  ];
  const STRATEGY_OPTIONS = [
    {
      name: 'strategy.serverLearningRate',
      label: 'Server learning rate',
      strategies: ['fedavgm', 'fedadam'],
    },
    { name: 'strategy.serverMomentum', label: 'Server momentum', strategies: ['fedavgm'] },
    { name: 'strategy.beta1', label: 'Server Adam β1', strategies: ['fedadam'] },
    { name: 'strategy.beta2', label: 'Server Adam β2', strategies: ['fedadam'] },
    { name: 'strategy.tau', label: 'Server Adam τ', strategies: ['fedadam'] },
    { name: 'strategy.beta', label: 'Trimmed fraction per side β', strategies: ['trimmed-mean'] },
    { name: 'strategy.clipNorm', label: 'Clip update norm', strategies: STRATEGIES },
  ];

  /**
   * Augmentation options (`training.augmentation.<group>.<key>`), one box per augmentation with
   * what it does; the help is the console's, as the shared schema carries no descriptions here.
   */
  const AUGMENTATION = [
    {
      group: 'randomResizedCrop',
      label: 'Random resized crop',
      help: 'Each global view is a random crop covering a fraction (scale) of the image area, resized to the input size.',
      fields: [
        { key: 'enabled', label: 'Enabled', boolean: true },
        { key: 'scaleMin', label: 'Scale min' },
        { key: 'scaleMax', label: 'Scale max' },
      ],
    },
    {
      group: 'horizontalFlip',
      label: 'Horizontal flip',
      help: 'Mirrors a view left to right with this probability.',
      fields: [
        { key: 'enabled', label: 'Enabled', boolean: true },
        { key: 'probability', label: 'Probability' },
      ],
    },
    {
      group: 'multiCrop',
      label: 'Multi-crop',
      help: 'Extra small local views for the online network; each costs another forward pass (0 views turns it off). Size is a fraction of the input size.',
      fields: [
        { key: 'localViews', label: 'Local views' },
        { key: 'sizeFraction', label: 'Size fraction' },
        { key: 'scaleMin', label: 'Scale min' },
        { key: 'scaleMax', label: 'Scale max' },
      ],
    },
    {
      group: 'gaussianBlur',
      label: 'Gaussian blur',
      help: 'Blurs a view with σ drawn up to σ max. Off by default: the study found blur and jitter hurt on ultrasound (at 32 px with the tiny network they did not; docs/results.md).',
      fields: [
        { key: 'enabled', label: 'Enabled', boolean: true },
        { key: 'probability', label: 'Probability' },
        { key: 'sigmaMax', label: 'σ max (px)' },
      ],
    },
    {
      group: 'colorJitter',
      label: 'Colour jitter',
      help: 'Scales brightness and contrast of a view by up to ± these fractions. Off by default, like blur: harmful on ultrasound in the study.',
      fields: [
        { key: 'enabled', label: 'Enabled', boolean: true },
        { key: 'probability', label: 'Probability' },
        { key: 'brightness', label: 'Brightness ±' },
        { key: 'contrast', label: 'Contrast ±' },
      ],
    },
    {
      group: 'grayscale',
      label: 'Random grayscale',
      help: 'Turns a 3-channel view gray; changes nothing on the 1-channel images fedssl trains on. Off by default.',
      fields: [
        { key: 'enabled', label: 'Enabled', boolean: true },
        { key: 'probability', label: 'Probability' },
      ],
    },
    {
      group: 'mixup',
      label: 'Mixup',
      help: "Blends each batch's source images with λ ~ Beta(α, α), folded to ≥ 0.5. Off by default.",
      fields: [
        { key: 'enabled', label: 'Enabled', boolean: true },
        { key: 'alpha', label: 'α' },
      ],
    },
  ].map((g) => ({
    ...g,
    fields: g.fields.map((f) => ({ ...f, name: `training.augmentation.${g.group}.${f.key}`, check: true })),
  }));

  /** Privacy options (docs/privacy.md): what each protects against and what it costs. */
  const PRIVACY = [
    {
      group: 'dp',
      label: 'Differential privacy (site level)',
      help:
        'Each site clips its whole update to L2 norm C and adds Gaussian noise σ·C before it leaves, so even a dishonest coordinator ' +
        'learns little about one site; the coordinator reports ε at δ. Costs accuracy: the noise is ~σ·√d times the clipped signal ' +
        "(d = model size), so single-digit ε swamps a small consortium's updates. Set all three or none; δ well below 1 / number of sites.",
      fields: [
        { name: 'privacy.dp.clipNorm', label: 'Clip norm C' },
        { name: 'privacy.dp.noiseMultiplier', label: 'Noise multiplier σ' },
        { name: 'privacy.dp.delta', label: 'δ' },
      ],
    },
    {
      group: 'secureAggregation',
      label: 'Secure aggregation',
      help:
        "Sites mask their updates pairwise so the coordinator (if honest but curious) learns only the round's sum. FedAvg only, at " +
        'least 2 sites per round, no server-side clipping; costs key set-up messages each round, larger uploads, and the ' +
        "coordinator's norm checks on single updates.",
      fields: [{ name: 'privacy.secureAggregation', label: 'Enabled', boolean: true }],
    },
  ].map((g) => ({ ...g, fields: g.fields.map((f) => ({ ...f, check: true })) }));

  /** The JSON Schema node of a dotted body path (`training.augmentation.mixup.alpha`), or null. */
  function schemaNode(props, path) {
    let node = null;
    for (const key of path) {
      node = props && props[key];
      if (!node) return null;
      // An optional object may come as `anyOf: [object, …]`.
      const obj = node.properties ? node : (node.anyOf || []).find((x) => x.properties);
      props = obj ? obj.properties : null;
    }
    return node;
  }

  /** `{ default, description, minimum, … }` of an Advanced field in `schema`, for the strategy chosen. */
  function fieldSchema(schema, name, strategy) {
    if (!schema) return {};
    const path = name.split('.');
    return (
      (path[0] === 'strategy'
        ? schema.strategies[strategy] && schema.strategies[strategy][path[1]]
        : schemaNode(schema.root, path)) || {}
    );
  }
  const onOff = (v) => (v === true ? 'on' : v === false ? 'off' : v);
  function defaultText(schema, name, strategy) {
    const def = fieldSchema(schema, name, strategy).default;
    const shown = def !== undefined ? onOff(def) : ABSENT_MEANS[name];
    return shown === undefined ? 'server default' : `server default: ${shown}`;
  }

  /**
   * The schema's range checks on the checked Advanced fields that are set, in the API's own
   * words (`path: message`, joined by `; `), so a value is refused the same way before and
   * after it is sent. Returns the problems and marks each offending field.
   */
  function rangeProblems(form, schema) {
    const problems = [];
    const bad = (el, message) => {
      el.setAttribute('aria-invalid', 'true');
      problems.push(`${el.name}: ${message}`);
    };
    const fields = [...form.querySelectorAll('input[data-check]')];
    // `privacy.dp` has no defaults: once one of its fields is set, the schema needs all three.
    const isDp = (el) => el.name.startsWith('privacy.dp.');
    const dpSet = fields.some((el) => isDp(el) && el.value !== '');
    // In form order, which is the schema's, so the list reads as the API's would.
    for (const el of fields) {
      el.removeAttribute('aria-invalid');
      if (el.value === '') {
        if (dpSet && isDp(el)) bad(el, 'Invalid input: expected number, received undefined');
        continue;
      }
      const v = Number(el.value);
      const n = fieldSchema(schema, el.name);
      if (n.type === 'integer' && !Number.isInteger(v))
        bad(el, 'Invalid input: expected int, received number');
      else if (n.exclusiveMinimum !== undefined && !(v > n.exclusiveMinimum))
        bad(el, `Too small: expected number to be >${n.exclusiveMinimum}`);
      else if (n.minimum !== undefined && !(v >= n.minimum))
        bad(el, `Too small: expected number to be >=${n.minimum}`);
      else if (n.exclusiveMaximum !== undefined && !(v < n.exclusiveMaximum))
        bad(el, `Too big: expected number to be <${n.exclusiveMaximum}`);
      else if (n.maximum !== undefined && !(v <= n.maximum))
        bad(el, `Too big: expected number to be <=${n.maximum}`);
    }
    return problems;
  }

  /**
   * Empty = not sent, so the server's default applies: a select's first option and a number's
   * placeholder say what that default is.
   */
  function advancedField(f, schema, strategy) {
    const title = fieldSchema(schema, f.name, strategy).description || f.help;
    const input = f.boolean
      ? h(
          'select',
          { name: f.name, 'data-optional': true, 'data-boolean': true },
          h('option', { value: '' }, defaultText(schema, f.name, strategy)),
          h('option', { value: 'true' }, 'on'),
          h('option', { value: 'false' }, 'off'),
        )
      : f.options
        ? h(
            'select',
            { name: f.name, 'data-optional': true },
            h('option', { value: '' }, defaultText(schema, f.name, strategy)),
            f.options.map((o) => h('option', { value: o }, o)),
          )
        : h('input', {
            name: f.name,
            type: 'number',
            step: 'any',
            'data-optional': true,
            'data-check': f.check,
            placeholder: defaultText(schema, f.name, strategy),
          });
    return h(
      'label',
      { title, 'data-strategies': f.strategies ? f.strategies.join(' ') : null },
      f.label,
      input,
    );
  }

  /** One augmentation or privacy option: its name, what it does, and its fields. */
  function optionGroup(g, schema) {
    return h(
      'fieldset',
      { class: 'option-group', id: `opt-${g.group}` },
      h('legend', {}, g.label),
      h('p', { class: 'note help' }, g.help),
      h(
        'div',
        { class: 'grid' },
        g.fields.map((f) => advancedField(f, schema)),
      ),
    );
  }

  function runForm(status, after, schema) {
    const strategy = h(
      'select',
      { name: 'strategy' },
      STRATEGIES.map((x) => h('option', { value: x }, x)),
    );
    const strategyOptions = h(
      'div',
      { class: 'grid', id: 'strategy-options' },
      STRATEGY_OPTIONS.map((f) => advancedField(f, schema, strategy.value)),
    );
    // Only the chosen strategy's options are shown (and sent); their defaults differ by strategy.
    function showStrategyOptions() {
      for (const label of strategyOptions.querySelectorAll('label[data-strategies]')) {
        label.hidden = !label.dataset.strategies.split(' ').includes(strategy.value);
        const field = label.querySelector('[name]');
        field.placeholder = defaultText(schema, field.name, strategy.value);
        field.title = fieldSchema(schema, field.name, strategy.value).description || '';
      }
    }
    strategy.addEventListener('change', showStrategyOptions);
    showStrategyOptions();
    const form = h(
      'form',
      {
        class: 'card',
        id: 'run-form',
        // The API validates; the console shows its exact message.
        novalidate: true,
        onsubmit: async (ev) => {
          ev.preventDefault();
          fill(status);
          const problems = rangeProblems(form, schema);
          if (problems.length > 0) {
            status.append(errorBox(problems.join('; ')));
            return;
          }
          try {
            const run = await api('POST', '/runs', runBody(form));
            toast(`run ${run.name} created`);
            await after(run);
          } catch (e) {
            status.append(errorBox(e.message));
          }
        },
      },
      h('h2', {}, 'New run'),
      h(
        'div',
        { class: 'grid' },
        h('label', {}, 'Name', h('input', { name: 'name', value: 'pretrain-1' })),
        numberField('rounds', 'Rounds', 3),
        numberField('minSites', 'Min sites per round', 2),
        numberField('roundDeadlineSeconds', 'Round deadline (s)', 600),
        h('label', {}, 'Strategy', strategy),
        numberField('seed', 'Seed', 1),
        h(
          'label',
          {},
          'Architecture',
          h(
            'select',
            { name: 'model.arch' },
            ['tiny', 'resnet18', 'resnet50'].map((a) => h('option', { value: a }, a)),
          ),
        ),
        numberField('model.inputSize', 'Input size (px)', 32),
        h(
          'label',
          {},
          'Encoder widths (comma list, optional)',
          h('input', { name: 'model.widths', value: '8,16,32' }),
        ),
        numberField('model.projectorHidden', 'Projector hidden', 32),
        numberField('model.projectionDim', 'Projection dim', 16),
        numberField('model.metadataHidden', 'Metadata head hidden', 16),
        numberField('training.localEpochs', 'Local epochs', 1),
        numberField('training.maxStepsPerRound', 'Max steps per round (0 = all)', 0),
        numberField('training.batchSize', 'Batch size', 16),
        numberField('training.learningRate', 'Learning rate', 0.001),
        numberField('training.emaMomentum', 'EMA momentum', 0.99),
        numberField('training.metadataWeight', 'Metadata weight λ', 0.5),
      ),
      h(
        'details',
        { class: 'advanced', id: 'run-advanced' },
        h('summary', {}, 'Advanced'),
        h('p', { class: 'note' }, 'Left empty, a field is not sent and the server default applies.'),
        h(
          'div',
          { class: 'grid' },
          ADVANCED.map((f) => advancedField(f, schema)),
        ),
        h('h3', {}, 'Strategy options'),
        strategyOptions,
        h('h3', {}, 'Augmentation'),
        h(
          'p',
          { class: 'note' },
          'Applied by every site to its own images; the defaults are the study recipe (crop, flip, multi-crop).',
        ),
        h(
          'div',
          { class: 'option-groups', id: 'run-augmentation' },
          AUGMENTATION.map((g) => optionGroup(g, schema)),
        ),
        h('h3', {}, 'Privacy'),
        h(
          'p',
          { class: 'note' },
          'Both protect the one thing that leaves a site, its update; both are off by default (docs/privacy.md).',
        ),
        h(
          'div',
          { class: 'option-groups', id: 'run-privacy' },
          PRIVACY.map((g) => optionGroup(g, schema)),
        ),
      ),
      h('div', { class: 'actions' }, h('button', { class: 'primary', type: 'submit' }, 'Create run')),
    );
    return form;
  }

  /**
   * The form as the API's JSON body: numbers as numbers, empty optional fields and the options
   * of other strategies left out; strategy options turn `strategy` into `{ name, …options }`.
   */
  function runBody(form) {
    const body = { model: {}, training: {} };
    const strategyOptions = {};
    for (const el of form.querySelectorAll('input[name], select[name]')) {
      if (el.closest('[hidden]')) continue;
      const path = el.name.split('.');
      let value = el.value;
      if (el.name === 'model.widths') {
        if (value.trim() === '') continue;
        value = value.split(',').map((x) => (x.trim() === '' ? x : Number(x)));
      } else if (el.type === 'number') {
        value = value === '' ? undefined : Number(value);
        if (value === undefined) continue;
      } else if (value === '' && el.dataset.optional !== undefined) {
        continue;
      } else if (el.dataset.boolean !== undefined) {
        value = value === 'true';
      }
      let target = path[0] === 'strategy' && path.length > 1 ? { strategy: strategyOptions } : body;
      // Nested objects (`privacy`, `training.augmentation.mixup`) exist only once a field in them is set.
      for (const p of path.slice(0, -1)) target = target[p] || (target[p] = {});
      target[path[path.length - 1]] = value;
    }
    if (Object.keys(strategyOptions).length > 0) body.strategy = { name: body.strategy, ...strategyOptions };
    return body;
  }

  async function runsPage() {
    const status = h('div', { id: 'runs-status' });
    const table = h('table', { id: 'runs-table' });
    async function load() {
      const runs = await api('GET', '/runs');
      fill(
        table,
        h(
          'tr',
          {},
          ['Run', 'State', 'Progress', 'Latest model', 'Created', ''].map((c) => h('th', {}, c)),
        ),
        runs.length === 0 ? h('tr', {}, h('td', { colspan: 6, class: 'note' }, 'No runs yet.')) : null,
        runs.map((run) => {
          const published = publishedRounds(run);
          return h(
            'tr',
            { 'data-run': run.id },
            h(
              'td',
              {},
              h('a', { href: `#/runs/${encodeURIComponent(run.id)}` }, run.name),
              h('div', {}, h('code', { class: 'note' }, run.id)),
            ),
            h('td', {}, badge(run.state)),
            h('td', {}, progress(run, published)),
            h('td', {}, h('code', {}, run.latestModelVersion || '—')),
            h('td', {}, fmtTime(run.createdAt)),
            h('td', {}, runActions(run, load, status)),
          );
        }),
      );
    }
    page(
      'Runs',
      status,
      table,
      runForm(
        status,
        async (run) => {
          await load();
          location.hash = `#/runs/${encodeURIComponent(run.id)}`;
        },
        await runSchema(),
      ),
    );
    await load();
    onLive = (ev) => {
      if (ev === 'run:state' || ev === 'round:state') void load().catch(() => {});
    };
  }

  /** Per-round figures the charts draw, from the run detail and the model list. */
  function roundSeries(run, models) {
    const bytesOf = new Map(models.map((m) => [m.manifest.version, m.manifest.weightsBytes]));
    const published = run.rounds.filter((r) => r.state === 'published');
    const sites = new Map();
    const global = [];
    const participation = [];
    const bytes = [];
    const time = [];
    for (const r of published) {
      const accepted = r.participants.filter((p) => p.state === 'accepted');
      let w = 0;
      let sum = 0;
      for (const p of accepted) {
        if (!p.metrics || typeof p.metrics.loss !== 'number') continue;
        const n = p.exampleCount || 1;
        w += n;
        sum += n * p.metrics.loss;
        const key = p.siteName || p.siteId;
        if (!sites.has(key)) sites.set(key, []);
        sites.get(key).push([r.round, p.metrics.loss]);
      }
      if (w > 0) global.push([r.round, sum / w]);
      participation.push([r.round, accepted.length, r.participants.length]);
      const size = bytesOf.get(r.modelVersion) ?? 0;
      // Down: the model to each offered site; up: one delta of the same tensors per accepted site.
      bytes.push([r.round, size * (r.participants.length + accepted.length)]);
      if (r.publishedAt && r.startedAt)
        time.push([r.round, (Date.parse(r.publishedAt) - Date.parse(r.startedAt)) / 1000]);
    }
    return { global, sites, participation, bytes, time };
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  /**
   * A small SVG chart. `series`: [{ name, points: [[x, y]], kind: 'line' | 'bar' }].
   * `data-points` on the svg counts the plotted points (tests and scripts read it).
   */
  function chart(id, title, yLabel, series, opts = {}) {
    const W = 520;
    const H = 220;
    const L = 64;
    const R = 12;
    const T = 12;
    const B = 34;
    const xs = series.flatMap((se) => se.points.map((p) => p[0]));
    const ys = series.flatMap((se) => se.points.map((p) => p[1]));
    const bars = series.filter((se) => se.kind === 'bar');
    // Bars are centred on their round: leave half a round of room at both ends.
    const pad = bars.length ? 0.5 : 0;
    const xMin = (xs.length ? Math.min(...xs) : 1) - pad;
    const xMax = (xs.length ? Math.max(...xs) : 1) + pad;
    const yMin = opts.zero === false && ys.length ? Math.min(...ys) : 0;
    const yMax = ys.length ? (opts.zero === false ? Math.max(...ys) : niceMax(Math.max(...ys))) : 1;
    const ySpan = yMax - yMin || Math.abs(yMax) || 1;
    const x = (v) => L + (xMax === xMin ? (W - L - R) / 2 : ((v - xMin) / (xMax - xMin)) * (W - L - R));
    const y = (v) => H - B - ((v - yMin) / ySpan) * (H - T - B);
    const svg = s('svg', {
      viewBox: `0 0 ${W} ${H}`,
      role: 'img',
      'aria-label': title,
      'data-chart': id,
      'data-points': ys.length,
    });
    for (let i = 0; i <= 4; i++) {
      const v = yMin + (ySpan * i) / 4;
      svg.append(
        s('line', { class: 'grid-line', x1: L, x2: W - R, y1: y(v), y2: y(v) }),
        s('text', { x: L - 6, y: y(v) + 3, 'text-anchor': 'end' }, (opts.format || ((n) => fmtNum(n, 3)))(v)),
      );
    }
    svg.append(
      s('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }),
      s('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }),
    );
    const rounds = [...new Set(xs)].sort((a, b) => a - b);
    for (const r of rounds) svg.append(s('text', { x: x(r), y: H - B + 14, 'text-anchor': 'middle' }, r));
    svg.append(s('text', { x: (L + W - R) / 2, y: H - 4, 'text-anchor': 'middle' }, 'round'));
    svg.append(
      s(
        'text',
        {
          x: 12,
          y: (T + H - B) / 2,
          'text-anchor': 'middle',
          transform: `rotate(-90 12 ${(T + H - B) / 2})`,
        },
        yLabel,
      ),
    );
    const slot = rounds.length > 1 ? (x(rounds[1]) - x(rounds[0])) * 0.7 : 60;
    const bw = bars.length ? Math.min(40, slot / bars.length) : 0;
    series.forEach((se, i) => {
      const color = se.color || COLORS[i % COLORS.length];
      if (se.kind === 'bar') {
        const k = bars.indexOf(se);
        for (const [px, py] of se.points) {
          const left = x(px) - (bars.length * bw) / 2 + k * bw;
          svg.append(
            s(
              'rect',
              { x: left, y: y(py), width: bw - 2, height: Math.max(0, H - B - y(py)), fill: color },
              s('title', {}, `${se.name} r${px}: ${fmtNum(py)}`),
            ),
          );
        }
      } else {
        const pts = se.points.map(([px, py]) => `${x(px)},${y(py)}`).join(' ');
        if (se.points.length > 1)
          svg.append(
            s('polyline', { points: pts, fill: 'none', stroke: color, 'stroke-width': se.width || 2 }),
          );
        for (const [px, py] of se.points)
          svg.append(
            s(
              'circle',
              { cx: x(px), cy: y(py), r: se.width ? 4 : 3, fill: color },
              s('title', {}, `${se.name} r${px}: ${fmtNum(py)}`),
            ),
          );
      }
    });
    const legend = h(
      'div',
      { class: 'legend' },
      series.map((se, i) => {
        const sw = h('span', { class: 'swatch' });
        sw.style.background = se.color || COLORS[i % COLORS.length];
        return h('span', {}, sw, se.name);
      }),
    );
    return h(
      'div',
      { class: 'chart' },
      h('h3', {}, title),
      ys.length ? svg : h('p', { class: 'note' }, 'No published round yet.'),
      legend,
    );
  }

  /** `fedavgm (serverLearningRate 1, serverMomentum 0.9)`; a plain name as it is. */
  function strategyLabel(strategy) {
    if (typeof strategy === 'string') return strategy;
    const { name, ...options } = strategy;
    const list = Object.entries(options).map(([k, v]) => `${k} ${v}`);
    return list.length ? `${name} (${list.join(', ')})` : name;
  }

  /** The Advanced form fields of a stored run config (the server fills in the defaults). */
  function advancedSummary(config) {
    const t = config.training;
    return [
      `norm ${config.model.norm ?? '—'}`,
      `local update ${t.localUpdate ?? '—'}${t.localUpdate === 'fedema' ? ` (λ ${t.fedemaScaler})` : ''}`,
      // Absent means reset (the schema leaves it absent so older agents accept the task).
      `site optimizer state ${t.siteOptimizerState ?? 'reset'}`,
      `update encoding ${t.updateEncoding ?? '—'}`,
    ].join(' · ');
  }

  /** The stored augmentation and privacy settings, and ε spent so far when DP is on. */
  function optionsSummary(config, privacyStatus) {
    const a = config.training.augmentation || {};
    const on = (o, detail) => (!o ? '—' : o.enabled ? `on${detail ? ` (${detail})` : ''}` : 'off');
    const p = config.privacy || {};
    const spent =
      privacyStatus && typeof privacyStatus.epsilon === 'number' && privacyStatus.releases > 0
        ? `, ε ${privacyStatus.epsilon.toPrecision(3)} after ${privacyStatus.releases} updates`
        : '';
    return [
      `crop ${on(a.randomResizedCrop, a.randomResizedCrop && `${a.randomResizedCrop.scaleMin}–${a.randomResizedCrop.scaleMax}`)}`,
      `flip ${on(a.horizontalFlip)}`,
      `multi-crop ${a.multiCrop ? a.multiCrop.localViews : '—'} local views`,
      `blur ${on(a.gaussianBlur)}`,
      `jitter ${on(a.colorJitter)}`,
      `grayscale ${on(a.grayscale)}`,
      `mixup ${on(a.mixup)}`,
      p.dp ? `DP C ${p.dp.clipNorm} σ ${p.dp.noiseMultiplier} δ ${p.dp.delta}${spent}` : 'DP off',
      `secure aggregation ${p.secureAggregation ? 'on' : 'off'}`,
    ].join(' · ');
  }

  async function runPage(runId) {
    const status = h('div');
    const head = h('div');
    const charts = h('div', { class: 'charts', id: 'charts' });
    const rounds = h('table', { id: 'rounds-table' });
    async function load() {
      const [run, models] = await Promise.all([
        api('GET', `/runs/${encodeURIComponent(runId)}`),
        api('GET', '/models'),
      ]);
      const published = run.rounds.filter((r) => r.state === 'published').length;
      fill(
        head,
        h(
          'div',
          { class: 'card' },
          h(
            'div',
            {},
            h('b', {}, run.name),
            ' ',
            h('code', { class: 'note' }, run.id),
            ' ',
            badge(run.state),
            ' ',
            progress(run, published),
          ),
          run.reason ? h('p', { class: 'note' }, run.reason) : null,
          h(
            'p',
            { class: 'note' },
            `${run.config.model.arch} · ${run.config.model.inputSize}px · strategy ${strategyLabel(run.config.strategy)} · min ${run.config.minSites} sites · λ ${run.config.training.metadataWeight}`,
          ),
          h('p', { class: 'note', id: 'run-advanced-summary' }, advancedSummary(run.config)),
          h('p', { class: 'note', id: 'run-options-summary' }, optionsSummary(run.config, run.privacy)),
          h('div', { class: 'actions' }, runActions(run, load, status)),
        ),
      );
      const d = roundSeries(run, models);
      fill(
        charts,
        chart(
          'loss',
          'Loss per round (global = example-weighted mean)',
          'loss',
          [
            { name: 'global', points: d.global, color: '#16213a', width: 3 },
            ...[...d.sites.entries()].map(([name, points]) => ({ name, points })),
          ],
          { zero: false },
        ),
        chart('participation', 'Participation', 'sites', [
          {
            name: 'offered',
            points: d.participation.map(([r, , o]) => [r, o]),
            kind: 'bar',
            color: '#c9d4ee',
          },
          {
            name: 'accepted',
            points: d.participation.map(([r, a]) => [r, a]),
            kind: 'bar',
            color: '#1a7f37',
          },
        ]),
        chart(
          'bytes',
          'Model bytes moved (down to offered + up from accepted sites)',
          'bytes',
          [{ name: 'bytes', points: d.bytes, kind: 'bar', color: '#2456c9' }],
          { format: fmtBytes },
        ),
        chart('time', 'Round time (open → published)', 'seconds', [
          { name: 'seconds', points: d.time, color: '#b25e00' },
        ]),
      );
      fill(
        rounds,
        h(
          'tr',
          {},
          ['Round', 'State', 'Sites', 'Started', 'Published', 'Model', 'Reason'].map((c) => h('th', {}, c)),
        ),
        run.rounds.map((r) =>
          h(
            'tr',
            {},
            h('td', {}, `${r.round}${r.attempt > 1 ? ` (attempt ${r.attempt})` : ''}`),
            h('td', {}, badge(r.state)),
            h(
              'td',
              {},
              r.participants.map((p) =>
                h(
                  'div',
                  {},
                  `${p.siteName || p.siteId} `,
                  badge(p.state),
                  p.metrics ? ` loss ${fmtNum(p.metrics.loss)}` : '',
                ),
              ),
            ),
            h('td', {}, fmtTime(r.startedAt)),
            h('td', {}, fmtTime(r.publishedAt)),
            h('td', {}, h('code', {}, r.modelVersion || '—')),
            h('td', { class: 'note' }, r.reason || ''),
          ),
        ),
      );
    }
    page('Run', status, head, h('h2', {}, 'Charts'), charts, h('h2', {}, 'Rounds'), rounds);
    await load();
    onLive = (ev, payload) => {
      if ((ev === 'run:state' || ev === 'round:state') && payload.runId === runId)
        void load().catch(() => {});
    };
  }

  // -------------------------------- models

  /**
   * What each download button fetches: the signed weights, or a file converted by the coordinator.
   * The card is built from the signed manifest alone, so it outlives pruned weights.
   */
  const DOWNLOADS = [
    { format: 'weights', label: 'Weights', route: (v) => `/models/${v}/weights`, file: (v) => `${v}.fsw` },
    {
      format: 'tfjs',
      label: 'TF.js',
      route: (v) => `/models/${v}/download/tfjs`,
      file: (v) => `${v}-tfjs.zip`,
    },
    {
      format: 'safetensors',
      label: 'safetensors',
      route: (v) => `/models/${v}/download/safetensors`,
      file: (v) => `${v}.safetensors`,
    },
    {
      format: 'card',
      label: 'Card',
      route: (v) => `/models/${v}/download/card`,
      file: (v) => `${v}.MODEL_CARD.md`,
      withoutWeights: true,
    },
  ];

  /** The file name the server gives in Content-Disposition (it names TF.js size variants). */
  function attachmentName(res) {
    const m = /filename="([^"]+)"/.exec(res.headers.get('content-disposition') || '');
    return m ? m[1] : null;
  }

  /** `query`: extra query string, e.g. `?inputSize=224` for a TF.js graph of another size. */
  async function download(version, status, d, query = '') {
    try {
      const res = await api('GET', d.route(encodeURIComponent(version)) + query, undefined, { raw: true });
      const blob = await res.blob();
      const url = URL.createObjectURL(blob);
      const a = h('a', { href: url, download: attachmentName(res) || d.file(version) });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (e) {
      status.append(errorBox(`${d.label} of ${version}: ${e.message}`));
    }
  }

  /** `?inputSize=N` when the admin chose another size than the model's own, else nothing. */
  function tfjsQuery(manifest, sizeInput) {
    const chosen = sizeInput.value.trim();
    return chosen === '' || chosen === String(manifest.model.inputSize)
      ? ''
      : `?inputSize=${encodeURIComponent(chosen)}`;
  }

  async function modelsPage() {
    const status = h('div', { id: 'models-status' });
    const detail = h('div', { id: 'manifest' });
    const models = await api('GET', '/models');
    const table = h(
      'table',
      { id: 'models-table' },
      h(
        'tr',
        {},
        ['Version', 'Run', 'Round', 'Sites', 'Size', 'SHA-256', 'Created', 'Weights', ''].map((c) =>
          h('th', {}, c),
        ),
      ),
      models.length === 0
        ? h('tr', {}, h('td', { colspan: 9, class: 'note' }, 'No model published yet.'))
        : null,
      models.map(({ manifest, weightsAvailable, prunedAt }) => {
        // Retention deleted the weights: the signed manifest stays, nothing is left to download.
        const pruned = weightsAvailable === false;
        const prunedNote = prunedAt
          ? `Weights deleted by the retention policy on ${fmtTime(prunedAt)}; the signed manifest is kept`
          : 'Weights deleted by the retention policy; the signed manifest is kept';
        return h(
          'tr',
          { 'data-version': manifest.version, class: pruned ? 'pruned' : null },
          h('td', {}, h('code', {}, manifest.version)),
          h('td', {}, manifest.runId || '—'),
          h('td', { class: 'num' }, manifest.round),
          h('td', { class: 'num' }, manifest.sites.length),
          h('td', { class: 'num' }, fmtBytes(manifest.weightsBytes)),
          h(
            'td',
            {},
            h('code', { title: manifest.weightsSha256 }, manifest.weightsSha256.slice(0, 16) + '…'),
          ),
          h('td', {}, fmtTime(manifest.createdAt)),
          h(
            'td',
            { class: 'weights' },
            pruned
              ? h(
                  'span',
                  { class: 'badge pruned', title: prunedNote },
                  prunedAt ? `pruned ${fmtTime(prunedAt)}` : 'pruned',
                )
              : badge('available'),
          ),
          h(
            'td',
            { class: 'downloads' },
            DOWNLOADS.map((d) => {
              // The TF.js graph's input side: the model's own by default; the server checks the range.
              const size =
                d.format === 'tfjs'
                  ? h('input', {
                      type: 'number',
                      class: 'input-size',
                      min: '16',
                      max: '512',
                      step: '1',
                      value: String(manifest.model.inputSize),
                      disabled: pruned,
                      'data-input-size': manifest.version,
                      'aria-label': `TF.js input size of ${manifest.version}`,
                      title:
                        manifest.model.norm === 'batch'
                          ? 'TF.js input size (px): a batch-norm graph takes any size'
                          : 'TF.js input size (px): the group-norm graph is built for this size',
                    })
                  : null;
              const button = h(
                'button',
                {
                  type: 'button',
                  title: pruned && !d.withoutWeights ? prunedNote : `Download ${d.label}`,
                  disabled: pruned && !d.withoutWeights,
                  'data-download': manifest.version,
                  'data-format': d.format,
                  onclick: () => download(manifest.version, status, d, size ? tfjsQuery(manifest, size) : ''),
                },
                d.label,
              );
              if (!size) return button;
              return h('span', { class: 'tfjs-download' }, button, size, 'px');
            }),
            h(
              'button',
              {
                type: 'button',
                'data-manifest': manifest.version,
                onclick: async () => {
                  const signed = await api('GET', `/models/${encodeURIComponent(manifest.version)}`);
                  fill(
                    detail,
                    h('h2', {}, `Signed manifest of ${manifest.version}`),
                    h(
                      'p',
                      { class: 'note' },
                      'Verify before use: ',
                      h(
                        'code',
                        {},
                        `fedssl-admin models pull --version ${manifest.version} --fingerprint "<coordinator fingerprint>"`,
                      ),
                    ),
                    h('pre', { class: 'json' }, JSON.stringify(signed, null, 2)),
                  );
                },
              },
              'Manifest',
            ),
          ),
        );
      }),
    );
    page('Model versions', status, table, detail);
    onLive = null;
  }

  // -------------------------------- audit

  /** Most entries the console reads in one view (pages of 1000, newest shown first). */
  const AUDIT_MAX = 5000;

  async function auditPage() {
    if (!features.audit) {
      page(
        'Audit log',
        h(
          'p',
          { class: 'note', id: 'audit-missing' },
          'This coordinator does not serve the audit log API (GET /api/v1/audit).',
        ),
      );
      onLive = null;
      return;
    }
    const verify = h('div', { id: 'audit-verify', class: 'card' });
    const table = h('table', { id: 'audit-table' });
    const more = h('p', { class: 'note' });
    page('Audit log', verify, table, more);
    try {
      const v = await api('GET', '/audit/verify');
      fill(
        verify,
        h('b', {}, 'Hash chain: '),
        badge(v.ok ? 'ok' : 'bad'),
        ' ',
        h(
          'span',
          { class: 'note' },
          v.ok
            ? `all ${v.entries} entries link and hash correctly`
            : `broken at entry ${v.firstBadSeq ?? '?'}: ${v.reason ?? 'unknown reason'} (${v.entries} checked)`,
        ),
      );
    } catch (e) {
      fill(verify, errorBox(e.message));
    }
    const entries = [];
    let after = 0;
    for (;;) {
      const body = await api('GET', `/audit?after=${after}&limit=1000`);
      entries.push(...body.entries);
      if (body.nextAfter === null || entries.length >= AUDIT_MAX) break;
      after = body.nextAfter;
    }
    entries.reverse();
    fill(
      table,
      h(
        'tr',
        {},
        ['#', 'When', 'Actor', 'Action', 'Target', 'Details', 'Hash'].map((c) => h('th', {}, c)),
      ),
      entries.length === 0 ? h('tr', {}, h('td', { colspan: 7, class: 'note' }, 'No entries.')) : null,
      entries.map((e) =>
        h(
          'tr',
          { 'data-seq': e.seq },
          h('td', { class: 'num' }, e.seq),
          h('td', {}, fmtTime(e.at)),
          h('td', {}, e.actor),
          h('td', {}, h('code', {}, e.action)),
          h('td', {}, h('code', {}, e.target)),
          h('td', {}, h('code', { class: 'note' }, JSON.stringify(e.details))),
          h('td', {}, h('code', { title: e.hash }, String(e.hash).slice(0, 12) + '…')),
        ),
      ),
    );
    fill(
      more,
      entries.length >= AUDIT_MAX
        ? `Showing the ${AUDIT_MAX} oldest entries, newest first; use fedssl-admin for the rest.`
        : '',
    );
    onLive = null;
  }

  // ------------------------------------------------------------------ router

  async function route() {
    if (!token()) return renderSignIn();
    const hash = location.hash.replace(/^#\/?/, '');
    const [name, arg] = hash.split('/');
    for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.page === name);
    fill(main, h('p', { class: 'note' }, 'Loading…'));
    try {
      if (name === 'tokens') await tokensPage();
      else if (name === 'runs' && arg) await runPage(decodeURIComponent(arg));
      else if (name === 'runs') await runsPage();
      else if (name === 'models') await modelsPage();
      else if (name === 'audit') await auditPage();
      else await sitesPage();
    } catch (e) {
      if (token()) fill(main, errorBox(e.message));
    }
  }

  window.addEventListener('hashchange', () => void route());
  signoutButton.addEventListener('click', () => signOut());
  if (token()) void enter();
  else renderSignIn();
})();
