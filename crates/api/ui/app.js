// jobsched web console: a vanilla ES module, no dependencies, no build step.
// It runs under a strict Content-Security-Policy, so it never uses inline code, eval or
// innerHTML: every node is built with the DOM API and API data only ever becomes text.
// The bearer token lives in sessionStorage and is only ever sent as a request header.

const TOKEN_KEY = 'jobsched.token';
const STATUSES = ['PENDING', 'SCHEDULED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED'];
const POLICIES = [
  ['fcfs', 'FCFS: first come, first served'],
  ['sjf', 'SJF: shortest job first'],
  ['priority', 'Priority: lowest number first'],
  ['round_robin', 'Round Robin: time slices'],
];
const PAGE_SIZE = 25;
const REFRESH_MS = 2000;
const DLQ_LIMIT = 1000;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const SVG_NS = 'http://www.w3.org/2000/svg';

const state = { role: 'anonymous', authRequired: false };
let current = { ctl: new AbortController(), cleanups: [] };
let pending = { notice: null, error: null };
let errorTransient = false;

const $ = (sel, root = document) => root.querySelector(sel);
const isAdmin = () => state.role === 'admin';

// ---------------------------------------------------------------- token storage

function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
}
function setToken(token) {
  try { sessionStorage.setItem(TOKEN_KEY, token); } catch { /* storage unavailable */ }
}
function clearToken() {
  try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* storage unavailable */ }
}

// ---------------------------------------------------------------- DOM helpers

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.setAttribute('class', v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  return el;
}

/** An HTML element: h('a', {href: '#/'}, 'text', child, [more]). */
function h(tag, attrs, ...children) {
  return append(setAttrs(document.createElement(tag), attrs), children);
}

/** An SVG element. */
function s(tag, attrs, ...children) {
  return append(setAttrs(document.createElementNS(SVG_NS, tag), attrs), children);
}

function frag(...children) {
  return append(document.createDocumentFragment(), children);
}

/** The page heading; focusable so route changes can move focus to it. */
const heading = (text, attrs = {}) => h('h1', { tabindex: '-1', ...attrs }, text);

/** A label + control pair. */
function field(labelText, control, hint) {
  const hintId = hint ? `${control.id}-hint` : null;
  if (hintId) control.setAttribute('aria-describedby', hintId);
  return h('div', { class: 'field' },
    h('label', { for: control.id }, labelText),
    control,
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null);
}

/** A horizontally scrollable, keyboard-reachable wrapper around a table. */
const tableWrap = (table, label) =>
  h('div', { class: 'table-wrap', role: 'region', 'aria-label': label, tabindex: '0' }, table);

/** A button that disables itself while its async action runs. */
function actionButton(attrs, label, action) {
  const btn = h('button', { type: 'button', ...attrs }, label);
  btn.addEventListener('click', async () => {
    btn.disabled = true;
    try { await action(btn); } finally { if (btn.isConnected) btn.disabled = false; }
  });
  return btn;
}

// ---------------------------------------------------------------- formatting

const nf = new Intl.NumberFormat();
const nf1 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const nf2 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

const fmtNumber = (n) => (n == null || Number.isNaN(Number(n)) ? '—' : nf.format(n));
const fmtRate = (n) => `${nf2.format(n)}/s`;
const plural = (n, one, many) => `${fmtNumber(n)} ${n === 1 ? one : many}`;
const shortId = (id) => String(id).slice(0, 8);

/** Seconds as "0.4 s", "42 s", "3 min 5 s", "2 h 10 min", "3 d 4 h". */
function fmtDuration(sec) {
  if (sec == null || !Number.isFinite(Number(sec))) return '—';
  const abs = Math.abs(Number(sec));
  if (abs < 10) return `${nf1.format(abs)} s`;
  const t = Math.round(abs);
  const pair = (a, ua, b, ub) => (b ? `${a} ${ua} ${b} ${ub}` : `${a} ${ua}`);
  if (t < 60) return `${t} s`;
  if (t < 3600) return pair(Math.floor(t / 60), 'min', t % 60, 's');
  if (t < 86400) return pair(Math.floor(t / 3600), 'h', Math.floor((t % 3600) / 60), 'min');
  return pair(Math.floor(t / 86400), 'd', Math.floor((t % 86400) / 3600), 'h');
}

/** An ISO time relative to now: "5 min ago", "in 30 s". */
function fmtRelative(iso) {
  const diff = Math.round((Date.parse(iso) - Date.now()) / 1000);
  if (!Number.isFinite(diff)) return '';
  if (Math.abs(diff) < 1) return 'just now';
  return diff < 0 ? `${fmtDuration(-diff)} ago` : `in ${fmtDuration(diff)}`;
}

const fmtLocal = (iso) =>
  new Date(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

/** A <time> in local time, with the ISO value as datetime and title. */
function timeEl(iso, { relative = false } = {}) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: iso, title: iso },
    fmtLocal(iso), relative ? ` (${fmtRelative(iso)})` : null);
}

const fmtQuantum = (q) => nf2.format(Number(q));

function fmtPolicy(status) {
  const p = status.current_policy;
  return p === 'round_robin' ? `${p} (quantum ${fmtQuantum(status.quantum_seconds)} s)` : p;
}

const badge = (status) =>
  h('span', { class: `badge badge-${String(status).toLowerCase()}` }, status);

// ---------------------------------------------------------------- messages

function showError(message, { transient = false } = {}) {
  const el = $('#error');
  el.textContent = message;
  errorTransient = transient;
  if (!transient && message) el.scrollIntoView({ block: 'nearest' });
}
function clearError() { showError(''); }
function clearTransientError() { if (errorTransient) clearError(); }
function setNotice(message) { $('#notice').textContent = message || ''; }

// ---------------------------------------------------------------- API client

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
    this.handled = false;
  }
}

const isAbort = (e) => e && e.name === 'AbortError';

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) { reject(new DOMException('Aborted', 'AbortError')); return; }
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      reject(new DOMException('Aborted', 'AbortError'));
    }, { once: true });
  });
}

/** The message of an error body: `detail` as a string or a list of field issues. */
function detailMessage(body, res) {
  const d = body && body.detail;
  if (typeof d === 'string' && d) return d;
  if (Array.isArray(d) && d.length) {
    return d.map((i) => {
      const loc = (i.loc || []).filter((p) => !['body', 'query', 'path'].includes(p)).join('.');
      return loc ? `${loc}: ${i.msg}` : String(i.msg);
    }).join('; ');
  }
  return `Request failed: HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`;
}

/**
 * Calls the API. GET requests retry on 503 and network failures until the page changes;
 * a 401 (unless `auth401` is false) clears the token and sends the user to the sign-in page.
 */
async function api(path, { method = 'GET', body, token = getToken(), signal, auth401 = true } = {}) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const init = {
    method, headers, signal, cache: 'no-store', credentials: 'omit',
    body: body === undefined ? undefined : JSON.stringify(body),
  };
  for (let attempt = 0; ; attempt += 1) {
    let res = null;
    try {
      res = await fetch(path, init);
    } catch (e) {
      if (isAbort(e)) throw e;
    }
    if (res && res.status !== 503) {
      if (attempt > 0) clearTransientError();
      let data = null;
      const text = await res.text();
      try { data = text ? JSON.parse(text) : null; } catch { data = null; }
      if (res.ok) return data;
      const err = new ApiError(res.status, detailMessage(data, res));
      if (res.status === 401 && auth401) {
        err.handled = true;
        signOutLocally();
        if (parseHash().path !== '/signin') {
          navigate('#/signin', { error: token ? 'Your token was not accepted; sign in again.' : 'Sign in to continue.' });
        }
      }
      throw err;
    }
    const message = res ? 'Service unavailable, retrying…' : 'Cannot reach the server, retrying…';
    if (method !== 'GET') {
      throw new ApiError(res ? 503 : 0, res ? 'Service unavailable, please try again.' : 'Cannot reach the server, please try again.');
    }
    showError(message, { transient: true });
    await sleep(Math.min(1000 * 2 ** attempt, 10000), signal);
  }
}

/** Shows an error unless it is an abort or was already handled. */
function handleError(e) {
  if (isAbort(e) || (e && e.handled)) return;
  showError(e instanceof ApiError ? e.message : `Unexpected error: ${e && e.message ? e.message : e}`);
}

// ---------------------------------------------------------------- session

async function whoami() {
  try {
    const me = await api('/ui/api/whoami', { auth401: false });
    state.authRequired = Boolean(me.auth_required);
    state.role = me.role || 'anonymous';
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      signOutLocally();
      pending.error = 'Your token was not accepted; sign in again.';
    } else {
      state.role = 'anonymous';
      handleError(e);
    }
  }
  updateHeader();
}

function signOutLocally() {
  clearToken();
  state.role = 'anonymous';
  state.authRequired = true;
  updateHeader();
}

function updateHeader() {
  const signedIn = Boolean(getToken());
  $('#role').textContent = `Role: ${state.role}`;
  $('#sign-out').hidden = !signedIn;
  $('#sign-in').hidden = signedIn;
}

async function signOut() {
  clearToken();
  await whoami();
  navigate(state.authRequired ? '#/signin' : '#/', { notice: 'Signed out.' });
}

// ---------------------------------------------------------------- confirm dialog

/** Asks in the modal dialog; resolves true when confirmed (Escape or "Go back" cancel). */
function confirmDialog({ title = 'Please confirm', text, detail = '', yes = 'Confirm' }) {
  const dlg = $('#confirm-dialog');
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  $('#confirm-detail').textContent = detail;
  $('#confirm-yes').textContent = yes;
  const opener = document.activeElement;
  dlg.returnValue = '';
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => {
      resolve(dlg.returnValue === 'yes');
      // After the action had a chance to re-enable its button (or replace the page).
      setTimeout(() => { if (opener && opener.isConnected && typeof opener.focus === 'function') opener.focus(); }, 0);
    }, { once: true });
    dlg.showModal();
    $('#confirm-no').focus();
  });
}

// ---------------------------------------------------------------- router

function parseHash() {
  const raw = location.hash.startsWith('#') ? location.hash.slice(1) : '';
  const [p, query = ''] = raw.split('?');
  const path = p && p.length > 1 ? p.replace(/\/+$/, '') : '/';
  return { path, params: new URLSearchParams(query) };
}

const ROUTES = [
  { re: /^\/$/, view: viewOverview },
  { re: /^\/jobs$/, view: viewJobs },
  { re: /^\/jobs\/([^/]+)$/, view: viewJob },
  { re: /^\/dead-letters$/, view: viewDeadLetters },
  { re: /^\/policy$/, view: viewPolicy },
  { re: /^\/signin$/, view: viewSignIn },
];

/** Goes to a hash (re-rendering when it is already the current one). */
function navigate(hash, { notice = null, error = null } = {}) {
  pending = { notice, error };
  if (location.hash === hash) {
    setNotice(pending.notice);
    pending.notice = null;
    render({ focus: true });
  } else {
    location.hash = hash;
  }
}

function markNav(path) {
  const section = `/${path.split('/')[1] || ''}`;
  for (const a of document.querySelectorAll('.site-nav a')) {
    if (a.dataset.route === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

/** Renders the page for the current hash; `soft` keeps the old content until the new is ready. */
async function render({ focus = false, soft = false, error = null } = {}) {
  current.ctl.abort();
  for (const fn of current.cleanups.splice(0)) {
    try { fn(); } catch { /* ignore */ }
  }
  const ctl = new AbortController();
  current = { ctl, cleanups: [] };
  const dlg = $('#confirm-dialog');
  if (dlg.open) dlg.close('');
  clearError();
  const err = error || pending.error;
  pending.error = null;
  if (err) showError(err);

  if (!location.hash.startsWith('#/')) history.replaceState(null, '', '#/');
  let { path, params } = parseHash();
  if (state.authRequired && state.role === 'anonymous' && path !== '/signin') {
    history.replaceState(null, '', '#/signin');
    ({ path, params } = parseHash());
  }
  markNav(path);
  let match = null;
  const route = ROUTES.find((r) => (match = path.match(r.re))) || { view: viewNotFound };
  const main = $('#main');
  if (!soft) main.replaceChildren(h('p', { class: 'loading' }, 'Loading…'));
  main.setAttribute('aria-busy', 'true');
  const ctx = {
    params, match, signal: ctl.signal,
    onCleanup: (fn) => current.cleanups.push(fn),
    rerender: (opts = {}) => { if (!ctl.signal.aborted) render({ soft: true, ...opts }); },
  };
  try {
    const node = await route.view(ctx);
    if (ctl.signal.aborted) return;
    main.replaceChildren(node);
    const h1 = $('h1', main);
    document.title = h1 ? `${h1.textContent} · jobsched` : 'jobsched';
    // Focus the heading after a route change, or when a soft re-render removed the focused control.
    if (h1 && (focus || (soft && document.activeElement === document.body))) h1.focus();
  } catch (e) {
    if (ctl.signal.aborted || (e && e.handled)) return;
    handleError(e);
    if (!soft || !main.querySelector('h1')) {
      main.replaceChildren(heading('This page could not be loaded'),
        actionButton({ id: 'page-retry' }, 'Try again', () => ctx.rerender()));
    }
  } finally {
    if (!ctl.signal.aborted) main.removeAttribute('aria-busy');
  }
}

// ---------------------------------------------------------------- overview

const CHART = { w: 720, h: 240, l: 44, r: 56, t: 22, b: 28 };

/** A short duration for axis ticks: "45 s", "1.5 min", "2 h". */
function fmtTick(sec) {
  if (sec < 60) return `${nf1.format(sec)} s`;
  if (sec < 3600) return `${nf1.format(sec / 60)} min`;
  if (sec < 86400) return `${nf1.format(sec / 3600)} h`;
  return `${nf1.format(sec / 86400)} d`;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** Samples with parsed times, and per-second rates between consecutive samples. */
function activitySeries(samples) {
  const pts = (samples || [])
    .map((smp) => ({ ...smp, t: Date.parse(smp.at) }))
    .filter((p) => Number.isFinite(p.t));
  const rates = [];
  for (let i = 1; i < pts.length; i += 1) {
    const a = pts[i - 1];
    const b = pts[i];
    const dt = (b.t - a.t) / 1000;
    if (dt <= 0) continue;
    const rate = (k) => Math.max(0, (Number(b[k]) - Number(a[k])) / dt);
    rates.push({ t: b.t, submitted: rate('submitted'), completed: rate('completed'), failed: rate('failed') });
  }
  return { pts, rates };
}

function activitySummary({ pts, rates }) {
  if (pts.length < 2 || !rates.length) return 'Not enough samples yet to show activity.';
  const first = pts[0];
  const last = pts[pts.length - 1];
  const span = (last.t - first.t) / 1000;
  const avg = (k) => fmtRate(Math.max(0, (last[k] - first[k]) / span));
  const now = rates[rates.length - 1];
  const maxWait = Math.max(...pts.map((p) => Number(p.oldest_pending_seconds) || 0));
  return `Over the last ${fmtDuration(span)}: on average ${avg('submitted')} submitted, `
    + `${avg('completed')} completed and ${avg('failed')} failed `
    + `(latest ${fmtRate(now.submitted)}, ${fmtRate(now.completed)} and ${fmtRate(now.failed)}). `
    + `The oldest pending job has waited ${fmtDuration(last.oldest_pending_seconds || 0)} `
    + `(longest in the window ${fmtDuration(maxWait)}).`;
}

function drawChart(svg, series) {
  // One user unit per CSS pixel once the chart is on the page, so the labels keep their size.
  const { h: ht, l, r, t, b } = CHART;
  const w = svg.isConnected ? Math.max(300, Math.round(svg.getBoundingClientRect().width)) : CHART.w;
  svg.setAttribute('viewBox', `0 0 ${w} ${ht}`);
  const pw = w - l - r;
  const ph = ht - t - b;
  const g = s('g', { class: 'plot', 'aria-hidden': 'true' });
  const { pts, rates } = series;
  if (pts.length < 2) {
    g.append(s('text', { x: w / 2, y: ht / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'Waiting for samples…'));
    $('.plot', svg).replaceWith(g);
    return;
  }
  const t0 = pts[0].t;
  const t1 = pts[pts.length - 1].t;
  const x = (tt) => l + ((tt - t0) / Math.max(1, t1 - t0)) * pw;
  const rMax = niceMax(Math.max(0, ...rates.flatMap((p) => [p.submitted, p.completed, p.failed])));
  const wMax = niceMax(Math.max(0, ...pts.map((p) => Number(p.oldest_pending_seconds) || 0)));
  const yR = (v) => t + ph - (v / rMax) * ph;
  const yW = (v) => t + ph - (v / wMax) * ph;
  for (let i = 0; i <= 4; i += 1) {
    const y = t + ph - (i / 4) * ph;
    g.append(
      s('line', { x1: l, x2: l + pw, y1: y, y2: y, class: i ? 'grid' : 'axis' }),
      s('text', { x: l - 6, y: y + 4, 'text-anchor': 'end', class: 'tick' }, nf2.format((rMax * i) / 4)),
      s('text', { x: l + pw + 6, y: y + 4, class: 'tick' }, fmtTick((wMax * i) / 4)),
    );
  }
  const narrow = pw < 400;
  const clock = (tt) => new Date(tt).toLocaleTimeString(undefined,
    narrow ? { hour: '2-digit', minute: '2-digit' } : { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  (narrow ? [[t0, 'start'], [t1, 'end']] : [[t0, 'start'], [(t0 + t1) / 2, 'middle'], [t1, 'end']]).forEach(([tt, anchor]) =>
    g.append(s('text', { x: x(tt), y: ht - 8, 'text-anchor': anchor, class: 'tick' }, clock(tt))));
  g.append(
    s('text', { x: l, y: 12, class: 'axis-title' }, 'jobs per second'),
    s('text', { x: l + pw, y: 12, 'text-anchor': 'end', class: 'axis-title' }, 'oldest wait'),
  );
  const path = (arr, yf, cls) => s('path', {
    class: `line line-${cls}`,
    d: arr.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${yf(p).toFixed(1)}`).join(''),
  });
  g.append(path(pts, (p) => yW(Number(p.oldest_pending_seconds) || 0), 'wait'));
  for (const k of ['submitted', 'completed', 'failed']) g.append(path(rates, (p) => yR(p[k]), k));
  $('.plot', svg).replaceWith(g);
}

/** [stats, status, workers, activity] from GET /ui/api/overview, which the server answers from
 * background samples (a page view never counts the jobs table), as Promise.allSettled results. */
async function loadOverview(signal) {
  try {
    const o = await api('/ui/api/overview', { signal });
    const activity = { interval_seconds: o.interval_seconds, samples: o.samples };
    return [o.stats, o.status, o.workers, activity].map((value) => ({ status: 'fulfilled', value }));
  } catch (e) {
    return [1, 2, 3, 4].map(() => ({ status: 'rejected', reason: e }));
  }
}

async function viewOverview(ctx) {
  const cards = h('ul', { class: 'cards', 'aria-label': 'Jobs per status' },
    h('li', { class: 'card' }, h('a', { href: '#/jobs' },
      h('span', { class: 'card-label' }, 'Total'), h('span', { class: 'card-value', id: 'count-total' }, '—'))),
    STATUSES.map((st) => h('li', { class: `card card-${st.toLowerCase()}` },
      h('a', { href: `#/jobs?status=${st}` },
        h('span', { class: 'card-label' }, st.charAt(0) + st.slice(1).toLowerCase()),
        h('span', { class: 'card-value', id: `count-${st}` }, '—')))));
  const dd = (id) => h('dd', { id }, '—');
  const sched = h('dl', { class: 'facts' },
    h('dt', {}, 'Policy'), dd('overview-policy'),
    h('dt', {}, 'Dispatching'), dd('overview-paused'),
    h('dt', {}, 'Managed by'), dd('overview-managed'),
    h('dt', {}, 'Queue depth'), dd('overview-queue'),
    h('dt', {}, h('a', { href: '#/dead-letters' }, 'Dead letters')), dd('overview-dead-letters'),
    h('dt', {}, 'Workers'), dd('overview-workers'),
    h('dt', {}, 'Mean run time'), dd('overview-avg'));
  const workersBody = h('tbody');
  const workers = h('table', { id: 'workers' },
    h('caption', {}, 'Workers'),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Worker'), h('th', { scope: 'col' }, 'Slots in use'))),
    workersBody);
  const svg = s('svg', {
    id: 'activity-chart', class: 'chart', viewBox: `0 0 ${CHART.w} ${CHART.h}`,
    role: 'img', 'aria-labelledby': 'activity-title', 'aria-describedby': 'activity-desc',
  },
  s('title', { id: 'activity-title' }, 'Jobs submitted, completed and failed per second, and the oldest pending wait, over the last minutes'),
  s('desc', { id: 'activity-desc' }, ''),
  s('g', { class: 'plot', 'aria-hidden': 'true' }));
  const summary = h('p', { id: 'activity-summary', class: 'muted' }, '');
  const legend = h('ul', { class: 'legend', 'aria-hidden': 'true' },
    [['submitted', 'Submitted /s'], ['completed', 'Completed /s'], ['failed', 'Failed /s'], ['wait', 'Oldest pending wait (right axis)']]
      .map(([k, label]) => h('li', {}, h('span', { class: `swatch swatch-${k}` }), label)));

  // Admins switch the policy and pause or resume right here (the Policy page has the quantum).
  const quickSelect = h('select', { id: 'overview-policy-select', name: 'policy' },
    POLICIES.map(([value, label]) => h('option', { value }, label)));
  const pauseBtn = h('button', { type: 'button', id: 'overview-pause' }, 'Pause');
  const quick = h('form', { id: 'overview-switch', class: 'inline-form', 'aria-label': 'Switch the policy', hidden: true },
    field('Policy', quickSelect),
    h('div', { class: 'field-actions' },
      h('button', { type: 'submit', id: 'overview-policy-apply', class: 'primary' }, 'Switch'), pauseBtn));
  let current = null;
  const putPolicy = async (body, done) => {
    clearError();
    try {
      const res = await api('/scheduler/policy', { method: 'PUT', body, signal: ctx.signal });
      setNotice(done(res));
      await refresh();
    } catch (e) {
      if (isAbort(e) || e.handled) return;
      handleError(e);
    }
  };
  quick.addEventListener('submit', (ev) => {
    ev.preventDefault();
    putPolicy({ policy: quickSelect.value }, (res) => `Policy set to ${fmtPolicy(res)}.`);
  });
  pauseBtn.addEventListener('click', () => {
    if (!current) return;
    const paused = !current.paused;
    putPolicy({ policy: current.current_policy, paused },
      () => (paused ? 'Dispatching paused; running jobs finish.' : 'Dispatching resumed.'));
  });

  const set = (id, text) => { $(`#${id}`, root).textContent = text; };
  const root = h('div', { class: 'overview' },
    heading('Overview'),
    h('section', { 'aria-labelledby': 'h-counts' }, h('h2', { id: 'h-counts' }, 'Jobs'), cards),
    h('div', { class: 'two-col' },
      h('section', { 'aria-labelledby': 'h-sched' }, h('h2', { id: 'h-sched' }, 'Scheduler'), sched, quick),
      h('section', { 'aria-labelledby': 'h-workers' }, h('h2', { id: 'h-workers' }, 'Workers'), tableWrap(workers, 'Workers'))),
    h('section', { 'aria-labelledby': 'h-activity' }, h('h2', { id: 'h-activity' }, 'Activity'),
      h('figure', { class: 'chart-figure' }, svg, legend, h('figcaption', {}, summary))));

  async function refresh() {
    const [stats, status, wk, act] = await loadOverview(ctx.signal);
    if (ctx.signal.aborted) return;
    if (stats.status === 'fulfilled') {
      const v = stats.value;
      set('count-total', fmtNumber(v.total_jobs));
      for (const st of STATUSES) set(`count-${st}`, fmtNumber(v[st.toLowerCase()]));
      set('overview-avg', v.avg_execution_time_ms == null ? '—' : fmtDuration(v.avg_execution_time_ms / 1000));
    }
    if (status.status === 'fulfilled') {
      const v = status.value;
      set('overview-policy', fmtPolicy(v));
      set('overview-paused', v.paused ? 'paused' : 'running');
      set('overview-managed', v.managed_by ? `SchedulerConfig ${v.managed_by}` : 'this API');
      set('overview-queue', fmtNumber(v.queue_depth));
      set('overview-dead-letters', fmtNumber(v.dead_letter_count));
      set('overview-workers', `${fmtNumber(v.workers)} (${fmtNumber(v.free_slots)} of ${fmtNumber(v.total_slots)} slots free)`);
      // The switch is for admins, and only while no SchedulerConfig owns the policy.
      quick.hidden = !isAdmin() || Boolean(v.managed_by);
      if (!current || current.current_policy !== v.current_policy) quickSelect.value = v.current_policy;
      pauseBtn.textContent = v.paused ? 'Resume' : 'Pause';
      current = v;
    }
    if (wk.status === 'fulfilled') {
      const list = Array.isArray(wk.value) ? wk.value : [];
      workersBody.replaceChildren(...(list.length ? list.map((w) => h('tr', {},
        h('td', {}, h('code', {}, w.worker)),
        h('td', {}, `${fmtNumber(w.busy)} / ${fmtNumber(w.slots)}`,
          h('meter', { min: 0, max: Math.max(1, w.slots), value: w.busy, 'aria-hidden': 'true' }))))
        : [h('tr', {}, h('td', { colspan: '2', class: 'empty' }, 'No live workers'))]));
    }
    if (act.status === 'fulfilled') {
      const series = activitySeries(act.value && act.value.samples);
      drawChart(svg, series);
      // The first drawing happens before the page is attached: redraw at the real width.
      if (!svg.isConnected) requestAnimationFrame(() => { if (svg.isConnected) drawChart(svg, series); });
      const text = activitySummary(series);
      summary.textContent = text;
      $('desc', svg).textContent = text;
    }
    const failed = [stats, status, wk, act].find((x) => x.status === 'rejected');
    if (failed) handleError(failed.reason);
    else clearError();
  }

  let timer = null;
  let running = false;
  const tick = async () => {
    timer = null;
    if (running || document.hidden || ctx.signal.aborted) return;
    running = true;
    try { await refresh(); } catch (e) { handleError(e); } finally { running = false; }
    if (!ctx.signal.aborted && !document.hidden && !timer) timer = setTimeout(tick, REFRESH_MS);
  };
  const onVisibility = () => {
    if (document.hidden) { clearTimeout(timer); timer = null; } else if (!timer) tick();
  };
  document.addEventListener('visibilitychange', onVisibility);
  ctx.onCleanup(() => { clearTimeout(timer); timer = null; document.removeEventListener('visibilitychange', onVisibility); });
  running = true;
  try { await refresh(); } finally { running = false; }
  if (!ctx.signal.aborted && !document.hidden) timer = setTimeout(tick, REFRESH_MS);
  return root;
}

// ---------------------------------------------------------------- jobs

function readJobFilters(params) {
  const status = (params.get('status') || '').toUpperCase();
  const page = parseInt(params.get('page') || '1', 10);
  return {
    status: STATUSES.includes(status) ? status : '',
    job_type: (params.get('job_type') || '').trim(),
    q: (params.get('q') || '').trim(),
    page: Number.isFinite(page) && page >= 1 ? page : 1,
  };
}

function jobsHash(f) {
  const qs = new URLSearchParams();
  if (f.status) qs.set('status', f.status);
  if (f.job_type) qs.set('job_type', f.job_type);
  if (f.q) qs.set('q', f.q);
  if (f.page > 1) qs.set('page', String(f.page));
  const q = qs.toString();
  return q ? `#/jobs?${q}` : '#/jobs';
}

async function viewJobs(ctx) {
  const f = readJobFilters(ctx.params);
  const qs = new URLSearchParams();
  if (f.status) qs.set('status', f.status);
  if (f.job_type) qs.set('job_type', f.job_type);
  if (f.q) qs.set('q', f.q);
  qs.set('page', String(f.page));
  qs.set('page_size', String(PAGE_SIZE));
  const data = await api(`/jobs/?${qs}`, { signal: ctx.signal });
  const size = data.page_size || PAGE_SIZE;
  const pages = Math.max(1, Math.ceil((data.total || 0) / size));
  const pageNo = data.page || f.page;

  const statusSel = h('select', { id: 'filter-status', name: 'status' },
    h('option', { value: '' }, 'any'),
    STATUSES.map((st) => h('option', { value: st, selected: st === f.status }, st)));
  const typeIn = h('input', { id: 'filter-type', name: 'job_type', type: 'text', value: f.job_type, autocomplete: 'off', spellcheck: 'false' });
  const qIn = h('input', { id: 'filter-q', name: 'q', type: 'search', value: f.q, autocomplete: 'off', spellcheck: 'false' });
  const form = h('form', { id: 'jobs-filter', class: 'filters', role: 'search', 'aria-label': 'Filter jobs' },
    field('Status', statusSel),
    field('Job type', typeIn),
    field('Job id or name prefix', qIn),
    h('div', { class: 'field field-actions' },
      h('button', { type: 'submit', id: 'filter-apply', class: 'primary' }, 'Apply'),
      (f.status || f.job_type || f.q) ? h('a', { href: '#/jobs', id: 'filter-clear' }, 'Clear filters') : null));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    navigate(jobsHash({ status: statusSel.value, job_type: typeIn.value.trim(), q: qIn.value.trim(), page: 1 }));
  });

  const rows = (data.jobs || []).map((j) => h('tr', {},
    h('td', {}, h('a', { href: `#/jobs/${encodeURIComponent(j.id)}`, class: 'job-link' }, j.name || '(unnamed)')),
    h('td', {}, h('code', { title: j.id }, shortId(j.id))),
    h('td', {}, j.job_type),
    h('td', {}, badge(j.status)),
    h('td', { class: 'num' }, fmtNumber(j.priority)),
    h('td', {}, timeEl(j.created_at)),
    h('td', { class: 'num', title: `retried ${j.retry_count} of ${j.max_retries}` }, fmtNumber(j.attempt))));
  const table = h('table', { id: 'jobs-table' },
    h('caption', {}, `Jobs, newest first (${plural(data.total || 0, 'match', 'matches')})`),
    h('thead', {}, h('tr', {}, ['Name', 'ID', 'Type', 'Status', 'Priority', 'Created', 'Attempts']
      .map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, rows.length ? rows
      : h('tr', {}, h('td', { colspan: '7', class: 'empty' }, 'No jobs match these filters'))));

  const go = (p) => navigate(jobsHash({ ...f, page: p }));
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pagination' },
    h('button', { type: 'button', id: 'page-prev', disabled: pageNo <= 1, onclick: () => go(pageNo - 1) }, 'Previous'),
    h('span', { id: 'page-info', 'aria-live': 'polite' }, `page ${pageNo} of ${pages}`),
    h('button', { type: 'button', id: 'page-next', disabled: pageNo >= pages, onclick: () => go(pageNo + 1) }, 'Next'));

  return frag(heading('Jobs'), form, tableWrap(table, 'Jobs'), pager);
}

// ---------------------------------------------------------------- job

const FIELD_LABELS = {
  id: 'ID', name: 'Name', job_type: 'Type', status: 'Status', priority: 'Priority (1 = highest)',
  estimated_duration: 'Estimated duration', timeout_seconds: 'Timeout per run',
  error_message: 'Error', retry_count: 'Retries', max_retries: 'Retry budget',
  attempt: 'Attempt (dispatches)', slices: 'Slices (runs)', created_at: 'Created',
  scheduled_at: 'Dispatched', started_at: 'Started', completed_at: 'Completed',
  run_at: 'Run not before', lease_owner: 'Lease owner', lease_expires_at: 'Lease expires',
};
const BLOB_FIELDS = ['payload', 'result', 'checkpoint'];

function fieldValue(key, v) {
  if (key.endsWith('_at')) return timeEl(v, { relative: true });
  if (key === 'status') return badge(v);
  if (key === 'timeout_seconds' && v == null) return 'default of the job type';
  if (v == null || v === '') return h('span', { class: 'muted' }, '—');
  if (key === 'estimated_duration' || key === 'timeout_seconds') return `${nf2.format(v)} s`;
  if (key === 'id' || key === 'lease_owner') return h('code', {}, v);
  if (typeof v === 'number') return fmtNumber(v);
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

function timelineItem(event, label, iso, ...extra) {
  return h('li', { class: `tl tl-${event}`, dataset: { event } },
    h('span', { class: 'tl-label' }, label),
    iso ? [' ', timeEl(iso, { relative: true })] : null,
    extra.length ? [' ', h('span', { class: 'muted' }, ...extra)] : null);
}

function jobTimeline(job) {
  const items = [timelineItem('submitted', 'Submitted', job.created_at)];
  if (job.retry_count > 0) {
    items.push(timelineItem('retried', `Retried ${job.retry_count} ${job.retry_count === 1 ? 'time' : 'times'}`, null,
      `(retry budget ${job.max_retries})`));
  }
  if (job.run_at && Date.parse(job.run_at) > Date.now() && !['COMPLETED', 'FAILED', 'CANCELLED'].includes(job.status)) {
    items.push(timelineItem('backoff', 'Waiting for retry backoff until', job.run_at));
  }
  if (job.scheduled_at) {
    items.push(timelineItem('dispatched', 'Dispatched', job.scheduled_at, `attempt ${job.attempt}`,
      job.lease_owner ? `, to worker ${job.lease_owner}` : ''));
  }
  if (job.started_at) {
    items.push(timelineItem('started', 'Started', job.started_at,
      job.lease_expires_at && job.status === 'RUNNING' ? `lease until ${fmtLocal(job.lease_expires_at)}` : ''));
  }
  if (job.slices > 1 || job.checkpoint) {
    items.push(timelineItem('slices', `Ran in ${plural(job.slices, 'slice', 'slices')}`, null,
      job.checkpoint ? '(Round Robin; progress checkpointed between slices)' : '(Round Robin or retries)'));
  }
  if (job.completed_at) {
    const ran = job.started_at ? (Date.parse(job.completed_at) - Date.parse(job.started_at)) / 1000 : null;
    items.push(timelineItem('finished', `Finished: ${job.status}`, job.completed_at,
      ran != null && ran >= 0 ? `after running ${fmtDuration(ran)}` : ''));
  } else if (job.status === 'CANCELLED') {
    items.push(timelineItem('finished', 'Finished: CANCELLED', null));
  }
  return h('ol', { id: 'job-timeline', class: 'timeline' }, items);
}

const prettyJson = (id, v) => h('pre', { id, class: 'json', tabindex: '0' }, JSON.stringify(v ?? null, null, 2));

async function viewJob(ctx) {
  const id = decodeURIComponent(ctx.match[1]);
  if (!UUID_RE.test(id)) {
    showError('Job not found');
    return frag(heading('Job not found'), h('p', {}, h('a', { href: '#/jobs' }, 'Back to jobs')));
  }
  let job;
  try {
    job = await api(`/jobs/${encodeURIComponent(id)}`, { signal: ctx.signal });
  } catch (e) {
    if (e.status !== 404) throw e;
    showError('Job not found');
    return frag(heading('Job not found'), h('p', {}, h('a', { href: '#/jobs' }, 'Back to jobs')));
  }
  let inDlq = false;
  if (isAdmin() && job.status === 'FAILED') {
    try {
      const dl = await api(`/scheduler/dead-letter?limit=${DLQ_LIMIT}`, { signal: ctx.signal });
      inDlq = (dl || []).some((d) => String(d.job_id).toLowerCase() === String(job.id).toLowerCase());
    } catch (e) {
      if (isAbort(e) || e.handled) throw e;
      handleError(e);
    }
  }
  const name = job.name || shortId(job.id);
  const actions = h('div', { class: 'actions' });
  if (job.status === 'PENDING' || job.status === 'SCHEDULED') {
    actions.append(actionButton({ id: 'job-cancel', class: 'danger' }, 'Cancel job', async () => {
      const ok = await confirmDialog({ title: 'Cancel job', text: `Cancel job “${name}”?`, detail: 'It will not run. Only pending or scheduled jobs can be cancelled.', yes: 'Cancel job' });
      if (!ok) return;
      try {
        await api(`/jobs/${encodeURIComponent(job.id)}`, { method: 'DELETE', signal: ctx.signal });
        setNotice(`Cancelled job “${name}”.`);
        ctx.rerender();
      } catch (e) {
        if (isAbort(e) || e.handled) return;
        ctx.rerender({ error: e.message });
      }
    }));
  }
  if (inDlq) {
    actions.append(actionButton({ id: 'job-retry', class: 'primary' }, 'Retry job', async () => {
      const ok = await confirmDialog({ title: 'Retry job', text: `Retry job “${name}”?`, detail: 'It leaves the dead-letter queue and goes back to the queue with a fresh retry budget.', yes: 'Retry job' });
      if (!ok) return;
      try {
        await api(`/scheduler/dead-letter/${encodeURIComponent(job.id)}/retry`, { method: 'POST', signal: ctx.signal });
        setNotice(`Job “${name}” is queued again.`);
        ctx.rerender();
      } catch (e) {
        if (isAbort(e) || e.handled) return;
        ctx.rerender({ error: e.message });
      }
    }));
  }
  actions.append(actionButton({ id: 'job-refresh' }, 'Reload', () => ctx.rerender()));

  const facts = h('dl', { class: 'facts', id: 'job-fields' },
    Object.keys(job).filter((k) => !BLOB_FIELDS.includes(k)).map((k) => [
      h('dt', { title: k }, FIELD_LABELS[k] || k),
      h('dd', { id: `job-field-${k}` }, fieldValue(k, job[k])),
    ]));

  return frag(
    h('p', { class: 'crumbs' }, h('a', { href: '#/jobs' }, '← Jobs')),
    heading(name, { id: 'job-name' }),
    h('p', { class: 'job-status-line' }, 'Status: ', h('span', { id: 'job-status' }, badge(job.status)),
      ' ', h('code', { class: 'muted' }, job.id)),
    actions,
    job.error_message ? h('section', { class: 'job-error', 'aria-labelledby': 'h-error' },
      h('h2', { id: 'h-error' }, 'Error'), h('pre', { id: 'job-error' }, job.error_message)) : null,
    h('div', { class: 'two-col' },
      h('section', { 'aria-labelledby': 'h-timeline' }, h('h2', { id: 'h-timeline' }, 'Timeline'), jobTimeline(job)),
      h('section', { 'aria-labelledby': 'h-fields' }, h('h2', { id: 'h-fields' }, 'Details'), facts)),
    h('section', { 'aria-labelledby': 'h-payload' }, h('h2', { id: 'h-payload' }, 'Payload'), prettyJson('job-payload', job.payload)),
    h('section', { 'aria-labelledby': 'h-result' }, h('h2', { id: 'h-result' }, 'Result'), prettyJson('job-result', job.result)),
    h('section', { 'aria-labelledby': 'h-checkpoint' }, h('h2', { id: 'h-checkpoint' }, 'Checkpoint'), prettyJson('job-checkpoint', job.checkpoint)));
}

// ---------------------------------------------------------------- dead letters

async function viewDeadLetters(ctx) {
  const list = (await api(`/scheduler/dead-letter?limit=${DLQ_LIMIT}`, { signal: ctx.signal })) || [];
  const admin = isAdmin();
  const n = list.length;
  const nodes = [heading('Dead letters'),
    h('p', { class: 'muted' }, 'Jobs that failed for good after their retries, most recent failure first.')];
  if (!n) return frag(nodes, h('p', { id: 'dlq-empty', class: 'empty' }, 'No dead letters'));

  if (admin) {
    nodes.push(h('div', { class: 'actions' }, actionButton({ id: 'dlq-purge', class: 'danger' }, 'Purge all', async () => {
      const ok = await confirmDialog({ title: 'Purge dead letters', text: `Purge all ${plural(n, 'dead letter', 'dead letters')}?`, detail: 'The entries are removed from the queue; the jobs stay FAILED.', yes: 'Purge all' });
      if (!ok) return;
      try {
        const res = await api('/scheduler/dead-letter', { method: 'DELETE', signal: ctx.signal });
        setNotice(`Purged ${plural(res && res.purged != null ? res.purged : n, 'dead letter', 'dead letters')}.`);
        ctx.rerender();
      } catch (e) {
        if (isAbort(e) || e.handled) return;
        ctx.rerender({ error: e.message });
      }
    })));
  }
  const retry = (d) => actionButton({ class: 'dlq-retry', 'aria-label': `Retry ${d.name}`, dataset: { jobId: d.job_id } }, 'Retry', async () => {
    const ok = await confirmDialog({ title: 'Retry job', text: `Retry job “${d.name}”?`, detail: 'It leaves the dead-letter queue and goes back to the queue.', yes: 'Retry job' });
    if (!ok) return;
    try {
      await api(`/scheduler/dead-letter/${encodeURIComponent(d.job_id)}/retry`, { method: 'POST', signal: ctx.signal });
      setNotice(`Job “${d.name}” is queued again.`);
      ctx.rerender();
    } catch (e) {
      if (isAbort(e) || e.handled) return;
      ctx.rerender({ error: e.message });
    }
  });
  const cols = ['Name', 'Type', 'Error', 'Retries', 'Failed at'].concat(admin ? ['Actions'] : []);
  const table = h('table', { id: 'dlq-table' },
    h('caption', {}, `Dead-letter queue (${plural(n, 'entry', 'entries')}${n >= DLQ_LIMIT ? `, the ${DLQ_LIMIT} most recent shown` : ''})`),
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, list.map((d) => h('tr', {},
      h('td', {}, h('a', { href: `#/jobs/${encodeURIComponent(d.job_id)}`, class: 'dlq-link' }, d.name || shortId(d.job_id))),
      h('td', {}, d.job_type),
      h('td', { class: 'error-cell' }, d.error || '—'),
      h('td', { class: 'num' }, fmtNumber(d.retry_count)),
      h('td', {}, timeEl(d.failed_at)),
      admin ? h('td', {}, retry(d)) : null))));
  return frag(nodes, tableWrap(table, 'Dead letters'));
}

// ---------------------------------------------------------------- policy

function managedNote(managedBy) {
  const i = managedBy.indexOf('/');
  const ns = i >= 0 ? managedBy.slice(0, i) : '';
  const name = i >= 0 ? managedBy.slice(i + 1) : managedBy;
  const cmd = `kubectl edit schedulerconfig ${name}${ns ? ` -n ${ns}` : ''}`;
  return h('p', { id: 'policy-managed', class: 'note' },
    `The policy is managed by SchedulerConfig ${name}${ns ? ` in namespace ${ns}` : ''}; the API cannot change it. Change it with `,
    h('code', {}, cmd), '.');
}

async function viewPolicy(ctx) {
  // The overview's status comes from the background samples: cheap however many jobs exist.
  const status = (await api('/ui/api/overview', { signal: ctx.signal })).status;
  const nodes = [heading('Scheduling policy'),
    h('p', {}, 'Current policy: ', h('strong', { id: 'policy-current' }, fmtPolicy(status)),
      '; dispatching is ', h('strong', { id: 'policy-state' }, status.paused ? 'paused' : 'running'), '.')];
  if (status.managed_by) nodes.push(managedNote(status.managed_by));
  if (!isAdmin()) {
    nodes.push(h('p', { id: 'policy-readonly' }, 'Switching the policy needs the admin token.'));
    return frag(nodes);
  }
  const locked = Boolean(status.managed_by);
  const select = h('select', { id: 'policy-select', name: 'policy', disabled: locked },
    POLICIES.map(([v, label]) => h('option', { value: v, selected: v === status.current_policy }, label)));
  const quantum = h('input', {
    id: 'policy-quantum', name: 'quantum_seconds', type: 'number', step: '0.01', min: '0.01', max: '86400',
    required: true, inputmode: 'decimal', value: String(status.quantum_seconds), disabled: locked,
  });
  const paused = h('input', { id: 'policy-paused', name: 'paused', type: 'checkbox', checked: status.paused, disabled: locked });
  const form = h('form', { id: 'policy-form', class: 'stack', 'aria-label': 'Switch the scheduling policy' },
    field('Policy', select),
    field('Round Robin quantum (seconds)', quantum, 'How long a job runs before it yields to the next one; used by Round Robin only.'),
    h('div', { class: 'field field-check' }, paused, h('label', { for: 'policy-paused' }, 'Pause dispatching (running jobs finish)')),
    h('div', { class: 'field-actions' }, h('button', { type: 'submit', id: 'policy-apply', class: 'primary', disabled: locked }, 'Apply')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (locked) return;
    const btn = $('#policy-apply', form);
    btn.disabled = true;
    clearError();
    try {
      const body = { policy: select.value, quantum_seconds: Number(quantum.value), paused: paused.checked };
      const res = await api('/scheduler/policy', { method: 'PUT', body, signal: ctx.signal });
      setNotice(`Policy set to ${res && res.current_policy ? fmtPolicy(res) : body.policy}${body.paused ? ', dispatching paused' : ''}.`);
      ctx.rerender();
    } catch (e) {
      if (isAbort(e) || e.handled) return;
      handleError(e);
      btn.disabled = false;
    }
  });
  nodes.push(form);
  return frag(nodes);
}

// ---------------------------------------------------------------- sign in, not found

async function viewSignIn() {
  const input = h('input', {
    id: 'signin-token', name: 'token', type: 'password', required: true,
    autocomplete: 'off', spellcheck: 'false',
  });
  const form = h('form', { id: 'signin-form', class: 'stack', 'aria-label': 'Sign in' },
    field('Access token', input, 'The API or admin token of this jobsched server. It is kept for this browser tab only.'),
    h('div', { class: 'field-actions' }, h('button', { type: 'submit', id: 'signin-submit', class: 'primary' }, 'Sign in')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    const btn = $('#signin-submit', form);
    btn.disabled = true;
    clearError();
    try {
      const me = await api('/ui/api/whoami', { token, auth401: false });
      if (me.auth_required && (!me.role || me.role === 'anonymous')) throw new ApiError(401, 'not accepted');
      setToken(token);
      state.authRequired = Boolean(me.auth_required);
      state.role = me.role;
      updateHeader();
      navigate('#/', { notice: `Signed in as ${me.role}.` });
    } catch (e) {
      btn.disabled = false;
      if (e instanceof ApiError && e.status === 401) {
        input.setAttribute('aria-invalid', 'true');
        showError('That token was not accepted');
        input.focus();
      } else {
        handleError(e);
      }
    }
  });
  return frag(heading('Sign in'),
    h('p', {}, state.authRequired ? 'This server requires a token.' : 'This server does not require a token; an admin token unlocks admin controls.'),
    form);
}

async function viewNotFound() {
  return frag(heading('Page not found'), h('p', {}, h('a', { href: '#/' }, 'Go to the overview')));
}

// ---------------------------------------------------------------- start

function wireStatic() {
  const dlg = $('#confirm-dialog');
  $('#confirm-yes').addEventListener('click', () => dlg.close('yes'));
  $('#confirm-no').addEventListener('click', () => dlg.close('no'));
  $('#sign-out').addEventListener('click', () => { signOut(); });
  $('#skip-link').addEventListener('click', (ev) => { ev.preventDefault(); $('#main').focus(); });
  window.addEventListener('hashchange', () => {
    setNotice(pending.notice);
    pending.notice = null;
    render({ focus: true });
  });
}

async function start() {
  wireStatic();
  await whoami();
  if (pending.notice) setNotice(pending.notice);
  pending.notice = null;
  render();
}

start();
