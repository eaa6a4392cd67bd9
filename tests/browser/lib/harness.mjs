// Harness of the browser tests: the real scan2order binary on a free local port against the run's
// Postgres database, a fake WhatsApp Cloud API that records the messages the server sends, headless
// Chromium (Debian's, driven by playwright-core), and per-page checks (console errors, uncaught
// exceptions, CSP violations, dialogs, horizontal overflow) plus screenshots.
//
// Settings come from the environment (scripts/browser-tests sets them):
//   S2O_BIN            the server binary (default $CARGO_TARGET_DIR/debug/scan2order)
//   S2O_DATABASE_URL   the run's database (created by the server on first start; dropped by the script);
//                      unset (e.g. `npm test` in tests/browser), a random s2o_browser_* one, dropped at the end
//   S2O_ARTIFACTS      where screenshots and logs go (default <repo>/artifacts)
//   S2O_CHROMIUM       the browser (default /usr/bin/chromium)

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '../../..');

/** How long anything that should happen promptly may take before a test fails. */
export const PATIENCE_MS = 15_000;

export const WA_PHONE_NUMBER_ID = '100200300400500';
export const WA_ACCESS_TOKEN = 'browser-test-wa-token';
const OTP_TEMPLATE = 'scan2order_code';

export const VIEWPORTS = {
  phone: { width: 390, height: 844 },
  tablet: { width: 1280, height: 800 },
  desktop: { width: 1280, height: 800 },
};

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const stripAnsi = (s) => s.replace(/\x1b\[[0-9;]*m/g, '');

/** Poll `fn` until it returns a truthy value, at most `timeoutMs`. For conditions with no event to wait on. */
export async function waitUntil(fn, { timeoutMs = PATIENCE_MS, everyMs = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError = null;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${lastError.message}` : ''}`);
    }
    await sleep(everyMs);
  }
}

async function freePort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

// ---------------------------------------------------------------------------------------------------
// Fake WhatsApp Cloud API
// ---------------------------------------------------------------------------------------------------

/**
 * POST /{phone_number_id}/messages, checked like the real API would (bearer token, template message);
 * every accepted body is kept in `messages` and announced with a 'message' event.
 */
export class FakeWhatsApp extends EventEmitter {
  constructor(logFile) {
    super();
    this.messages = [];
    this.rejected = [];
    this.logFile = logFile;
    this.server = http.createServer((req, res) => this.handle(req, res));
  }

  async start() {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.port = this.server.address().port;
    this.baseUrl = `http://127.0.0.1:${this.port}`;
  }

  async stop() {
    this.server.closeAllConnections?.();
    this.server.close();
  }

  handle(req, res) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const reply = (status, body) => {
        res.writeHead(status, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      const text = Buffer.concat(chunks).toString('utf8');
      let body = null;
      try { body = JSON.parse(text); } catch { body = null; }
      const problem =
        req.method !== 'POST' || req.url !== `/${WA_PHONE_NUMBER_ID}/messages` ? `unexpected ${req.method} ${req.url}`
          : req.headers.authorization !== `Bearer ${WA_ACCESS_TOKEN}` ? 'wrong or missing bearer token'
            : !body || body.messaging_product !== 'whatsapp' || body.type !== 'template' || !body.template ? 'not a template message'
              : null;
      if (problem) {
        this.rejected.push({ problem, url: req.url, body: text });
        reply(400, { error: { message: problem, type: 'OAuthException', code: 100 } });
        return;
      }
      const entry = { at: Date.now(), body };
      this.messages.push(entry);
      if (this.logFile) fs.appendFileSync(this.logFile, `${JSON.stringify(body)}\n`);
      this.emit('message', entry);
      reply(200, { messaging_product: 'whatsapp', contacts: [{ input: body.to, wa_id: body.to }], messages: [{ id: `wamid.fake${this.messages.length}` }] });
    });
  }

  /** The first recorded message (from index `from` on) matching `pred`, waiting for it at most `timeoutMs`. */
  async waitFor(pred, { from = 0, timeoutMs = PATIENCE_MS, what = 'a WhatsApp message' } = {}) {
    const found = this.messages.slice(from).find((m) => pred(m.body));
    if (found) return found.body;
    return new Promise((resolve, reject) => {
      const onMessage = (m) => {
        if (!pred(m.body)) return;
        clearTimeout(timer);
        this.off('message', onMessage);
        resolve(m.body);
      };
      const timer = setTimeout(() => {
        this.off('message', onMessage);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      this.on('message', onMessage);
    });
  }

  /** The one-time code the server sent to `phone` (E.164) after message index `from`. */
  async codeFor(phone, from = 0) {
    const to = phone.replace(/\D/g, '');
    const body = await this.waitFor((b) => b.to === to && b.template.name === OTP_TEMPLATE,
      { from, what: `a one-time code for ${phone}` });
    const bodyComponent = (body.template.components || []).find((c) => c.type === 'body');
    const code = bodyComponent && bodyComponent.parameters && bodyComponent.parameters[0] && bodyComponent.parameters[0].text;
    if (!/^\d{4,10}$/.test(String(code))) throw new Error(`no code in the OTP message: ${JSON.stringify(body)}`);
    return String(code);
  }
}

// ---------------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------------

export class ServerProcess {
  constructor({ bin, databaseUrl, port, whatsappBaseUrl, logFile, pidFile }) {
    this.bin = bin;
    this.port = port;
    this.baseUrl = `http://127.0.0.1:${port}`;
    this.logFile = logFile;
    this.pidFile = pidFile;
    this.child = null;
    this.tables = []; // {slug, label, url}
    this.logins = []; // {role, slug, username, password}
    this.env = {
      ...process.env,
      NO_COLOR: '1',
      SCAN2ORDER__HTTP__HOST: '127.0.0.1',
      SCAN2ORDER__HTTP__PORT: String(port),
      SCAN2ORDER__HTTP__PUBLIC_BASE_URL: this.baseUrl,
      SCAN2ORDER__DATABASE__URL: databaseUrl,
      SCAN2ORDER__WHATSAPP__MODE: 'cloud',
      SCAN2ORDER__WHATSAPP__API_BASE_URL: whatsappBaseUrl,
      SCAN2ORDER__WHATSAPP__PHONE_NUMBER_ID: WA_PHONE_NUMBER_ID,
      SCAN2ORDER__WHATSAPP__ACCESS_TOKEN: WA_ACCESS_TOKEN,
      SCAN2ORDER__WHATSAPP__OUTBOX_POLL_MS: '200',
      SCAN2ORDER__RATE_LIMITS__ENABLED: 'false',
      SCAN2ORDER__DEMO__SEED_ON_START: 'true',
      SCAN2ORDER__LOG__LEVEL: process.env.SCAN2ORDER__LOG__LEVEL || 'info',
    };
  }

  /** Start the binary and wait for GET /readyz = 200 (at most 60 s: the first start creates and migrates). */
  async start() {
    if (this.child) throw new Error('server already running');
    fs.appendFileSync(this.logFile, `\n===== start ${new Date().toISOString()} on port ${this.port}\n`);
    const child = spawn(this.bin, ['serve'], { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.exited = once(child, 'exit').then(([code, signal]) => {
      fs.appendFileSync(this.logFile, `===== exited code=${code} signal=${signal}\n`);
      if (this.child === child) this.child = null;
      return { code, signal };
    });
    if (this.pidFile) fs.writeFileSync(this.pidFile, `${child.pid}\n`);
    let buffered = '';
    child.stdout.on('data', (chunk) => {
      const text = stripAnsi(chunk.toString('utf8'));
      fs.appendFileSync(this.logFile, text);
      buffered += text;
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        this.parseLine(buffered.slice(0, nl).trim());
        buffered = buffered.slice(nl + 1);
      }
    });
    child.stderr.on('data', (chunk) => fs.appendFileSync(this.logFile, stripAnsi(chunk.toString('utf8'))));

    const started = Date.now();
    let dead = false;
    this.exited.then(() => { dead = true; });
    await waitUntil(async () => {
      if (dead) throw new Error(`the server exited during start-up; see ${this.logFile}`);
      try {
        const res = await fetch(`${this.baseUrl}/readyz`);
        return res.status === 200;
      } catch {
        return false;
      }
    }, { timeoutMs: 60_000, everyMs: 100, what: `${this.baseUrl}/readyz = 200` }).catch((err) => {
      throw new Error(`${err.message}\n${this.logTail()}`);
    });
    return Date.now() - started;
  }

  parseLine(line) {
    let m = /^TABLE (\S+) (\S+) (\S+)$/.exec(line);
    if (m) {
      this.tables.push({ slug: m[1], label: m[2], url: m[3], token: m[3].split('/t/')[1] });
      return;
    }
    m = /^LOGIN (\S+) (\S+) (\S+) (\S+)$/.exec(line);
    if (m) this.logins.push({ role: m[1], slug: m[2], username: m[3], password: m[4] });
  }

  /** SIGTERM and wait for the process to end (SIGKILL after 20 s). */
  async stop() {
    const child = this.child;
    if (!child) return null;
    const started = Date.now();
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const result = await this.exited;
    clearTimeout(timer);
    if (this.pidFile) fs.rmSync(this.pidFile, { force: true });
    return { ...result, ms: Date.now() - started };
  }

  logTail(lines = 40) {
    try {
      return fs.readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  table(slug, label) {
    const t = this.tables.find((x) => x.slug === slug && x.label === label);
    if (!t) throw new Error(`the demo seed printed no TABLE ${slug} ${label}`);
    return t;
  }

  login(role, slug = '-') {
    const l = this.logins.find((x) => x.role === role && x.slug === slug);
    if (!l) throw new Error(`the demo seed printed no LOGIN ${role} ${slug}`);
    return l;
  }
}

// ---------------------------------------------------------------------------------------------------
// Page problems: console errors, uncaught exceptions, CSP violations, dialogs
// ---------------------------------------------------------------------------------------------------

/**
 * Everything a page reports that a person would call a bug. `allow` entries excuse problems expected by
 * a test (e.g. refused socket connections while the server is deliberately down).
 */
export class ProblemLog {
  constructor() {
    this.items = [];
    this.allowances = [];
  }

  add(item) {
    this.items.push({ at: Date.now(), ...item });
  }

  /** Excuse problems of `page` (a name or RegExp) whose text matches `pattern`, from now until `stop()`. */
  allow(page, pattern, reason) {
    const a = { page, pattern, reason, from: Date.now(), until: Infinity };
    this.allowances.push(a);
    return { stop: (graceMs = 0) => { a.until = Date.now() + graceMs; } };
  }

  allowanceFor(item) {
    return this.allowances.find((a) => {
      const pageOk = a.page instanceof RegExp ? a.page.test(item.page) : a.page === item.page;
      return pageOk && item.at >= a.from && item.at <= a.until && a.pattern.test(`${item.text} ${item.url || ''}`);
    });
  }

  excused(item) {
    return !!this.allowanceFor(item);
  }

  /** Drop everything a page reported (a self-test that provoked problems on purpose). */
  forget(page) {
    this.items = this.items.filter((i) => i.page !== page);
  }

  /** "reason: count, ..." of the problems that allowances excused. */
  excusedSummary() {
    const counts = new Map();
    for (const item of this.items) {
      const a = this.allowanceFor(item);
      if (a) counts.set(a.reason, (counts.get(a.reason) || 0) + 1);
    }
    return [...counts].map(([reason, n]) => `${reason}: ${n}`).join(', ');
  }

  /** Unexcused problems recorded since `since`. */
  since(since) {
    return this.items.filter((i) => i.at >= since && !this.excused(i));
  }
}

/** The 401 of GET /api/v1/auth/me is how the kitchen and admin apps learn that nobody is signed in. */
const SIGNED_OUT_CHECK = /status of 401 .*\/api\/v1\/auth\/me(\?|\s|$)/;

// ---------------------------------------------------------------------------------------------------
// The environment of a run
// ---------------------------------------------------------------------------------------------------

export class Env {
  constructor() {
    this.artifacts = process.env.S2O_ARTIFACTS || path.join(REPO, 'artifacts');
    this.screenshots = path.join(this.artifacts, 'screenshots');
    this.logs = path.join(this.artifacts, 'browser-tests');
    this.problems = new ProblemLog();
    this.contexts = new Set();
    this.pages = new Map(); // page → name
    this.screenshotsTaken = [];
  }

  async start() {
    fs.mkdirSync(this.logs, { recursive: true });
    fs.rmSync(this.screenshots, { recursive: true, force: true });
    fs.mkdirSync(this.screenshots, { recursive: true });
    for (const f of fs.readdirSync(this.logs)) {
      if (f === 'server.log' || f === 'whatsapp.jsonl' || /^failure-.*\.png$/.test(f)) fs.rmSync(path.join(this.logs, f), { force: true });
    }

    const targetDir = process.env.CARGO_TARGET_DIR || path.join(os.homedir(), '.cache/scan2order/target');
    const bin = process.env.S2O_BIN || path.join(targetDir, 'debug/scan2order');
    if (!fs.existsSync(bin)) throw new Error(`no server binary at ${bin}: run cargo build (scripts/browser-tests does)`);
    let databaseUrl = process.env.S2O_DATABASE_URL;
    if (!databaseUrl) {
      // Run directly (npm test): a database of our own, dropped in stop().
      this.ownDatabase = `s2o_browser_${randomBytes(6).toString('hex')}`;
      databaseUrl = `postgres://postgres@127.0.0.1:5432/${this.ownDatabase}`;
    }

    this.whatsapp = new FakeWhatsApp(path.join(this.logs, 'whatsapp.jsonl'));
    await this.whatsapp.start();
    this.server = new ServerProcess({
      bin,
      databaseUrl,
      port: await freePort(),
      whatsappBaseUrl: this.whatsapp.baseUrl,
      logFile: path.join(this.logs, 'server.log'),
      pidFile: process.env.S2O_SERVER_PIDFILE || null,
    });
    const ms = await this.server.start();
    log(`server ready on ${this.server.baseUrl} in ${ms} ms (${this.server.tables.length} tables, ${this.server.logins.length} logins seeded)`);
    if (!this.server.tables.length || !this.server.logins.length) {
      throw new Error('the server printed no TABLE/LOGIN lines: was the database not fresh?');
    }
    this.browser = await chromium.launch({
      executablePath: process.env.S2O_CHROMIUM || '/usr/bin/chromium',
      headless: true,
      chromiumSandbox: false,
      args: CHROMIUM_ARGS,
      timeout: 60_000,
    });
    log(`chromium ${this.browser.version()}`);
  }

  async stop() {
    for (const ctx of this.contexts) await ctx.close().catch(() => {});
    if (this.browser) await this.browser.close().catch(() => {});
    if (this.server) await this.server.stop().catch(() => {});
    if (this.whatsapp) await this.whatsapp.stop().catch(() => {});
    if (this.ownDatabase) {
      spawnSync('psql', ['-q', '-h', '127.0.0.1', '-U', 'postgres', '-d', 'postgres', '-c',
        `DROP DATABASE IF EXISTS "${this.ownDatabase}" WITH (FORCE)`], { stdio: 'ignore' });
    }
  }

  get baseUrl() {
    return this.server.baseUrl;
  }

  /**
   * A fresh browser context (its own cookies and storage: another person's device) of the given kind,
   * whose pages are watched for problems.
   */
  async newContext(kind) {
    const viewport = VIEWPORTS[kind];
    if (!viewport) throw new Error(`unknown viewport kind ${kind}`);
    const ctx = await this.browser.newContext({
      viewport,
      deviceScaleFactor: 1,
      isMobile: kind === 'phone',
      hasTouch: kind !== 'desktop',
      locale: 'en-GB',
      timezoneId: 'Europe/Rome',
      baseURL: this.baseUrl,
    });
    ctx.setDefaultTimeout(PATIENCE_MS);
    ctx.setDefaultNavigationTimeout(PATIENCE_MS);
    await ctx.exposeBinding('__s2oReportCsp', ({ page }, v) => {
      this.problems.add({ page: this.pages.get(page) || 'unknown', kind: 'csp', text: `CSP violation: ${v.directive} blocked ${v.blocked} (${v.source}:${v.line})` });
    });
    await ctx.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) => {
        window.__s2oReportCsp({ directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile, line: e.lineNumber });
      });
    });
    ctx.on('page', (page) => this.watch(page, `${this.nameOfContext(ctx)}-popup`));
    this.contexts.add(ctx);
    ctx.on('close', () => this.contexts.delete(ctx));
    return ctx;
  }

  nameOfContext(ctx) {
    for (const [page, name] of this.pages) if (page.context() === ctx) return name;
    return 'page';
  }

  /** A new page in a new context, named for problem reports. */
  async newPage(kind, name) {
    const ctx = await this.newContext(kind);
    const page = await ctx.newPage();
    if (this.pages.has(page)) this.rename(page, name);
    else this.watch(page, name);
    return page;
  }

  watch(page, name) {
    if (this.pages.has(page)) return page;
    this.pages.set(page, name);
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const loc = msg.location();
      this.problems.add({ page: this.pages.get(page), kind: 'console', text: msg.text(), url: loc && loc.url });
    });
    page.on('pageerror', (err) => this.problems.add({ page: this.pages.get(page), kind: 'exception', text: String(err && err.stack || err) }));
    page.on('dialog', (dialog) => {
      this.problems.add({ page: this.pages.get(page), kind: 'dialog', text: `a ${dialog.type()} dialog opened: ${dialog.message()}` });
      dialog.dismiss().catch(() => {});
    });
    page.on('crash', () => this.problems.add({ page: this.pages.get(page), kind: 'crash', text: 'the page crashed' }));
    this.problems.allow(name, SIGNED_OUT_CHECK, 'signed-out check');
    return page;
  }

  rename(page, name) {
    this.pages.set(page, name);
    this.problems.allow(name, SIGNED_OUT_CHECK, 'signed-out check');
  }

  /** The problems reported since `since` that no allowance excuses, one per line ('' when none). */
  describeProblems(since) {
    return this.problems.since(since).map((p) => `  [${p.page}] ${p.kind}: ${p.text}${p.url ? ` (${p.url})` : ''}`).join('\n');
  }

  /** Fail when any watched page reported a problem since `since` (that no allowance excuses). */
  assertNoPageProblems(since) {
    const found = this.describeProblems(since);
    if (found) throw new Error(`the pages reported problems:\n${found}`);
  }

  /** Screenshot at the page's current size into artifacts/screenshots/<name>.png. */
  async screenshot(page, name, { fullPage = false } = {}) {
    const file = path.join(this.screenshots, `${name}.png`);
    await page.screenshot({ path: file, fullPage, animations: 'disabled', caret: 'hide' });
    this.screenshotsTaken.push(file);
    return file;
  }

  /**
   * Screenshot at another viewport (phone or desktop), checking that nothing overflows sideways there,
   * then put the page back to its size.
   */
  async screenshotAt(page, kind, name, options = {}) {
    const before = page.viewportSize();
    await page.setViewportSize(VIEWPORTS[kind]);
    try {
      await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
      await assertNoHorizontalOverflow(page, `${name}`);
      return await this.screenshot(page, name, options);
    } finally {
      await page.setViewportSize(before);
    }
  }

  /** Screenshots of every open page, after a failure. */
  async failureScreenshots(testName) {
    const slug = testName.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').toLowerCase();
    for (const [page, name] of this.pages) {
      if (page.isClosed()) continue;
      await page.screenshot({ path: path.join(this.logs, `failure-${slug}-${name}.png`) }).catch(() => {});
    }
  }

  /** Close every context opened so far (end of a test). */
  async closeContexts() {
    for (const ctx of [...this.contexts]) await ctx.close().catch(() => {});
    for (const page of [...this.pages.keys()]) if (page.isClosed()) this.pages.delete(page);
  }
}

/** No element may stick out to the side of the viewport (the page would scroll sideways on a phone). */
export async function assertNoHorizontalOverflow(page, what) {
  const report = await page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const scroll = document.documentElement.scrollWidth;
    if (scroll <= width + 1) return null;
    const culprits = [];
    for (const el of document.body.querySelectorAll('*')) {
      const r = el.getBoundingClientRect();
      if (r.width && r.right > width + 1 && getComputedStyle(el).position !== 'fixed') {
        culprits.push(`${el.tagName.toLowerCase()}${el.dataset.testid ? `[${el.dataset.testid}]` : ''}${el.className && typeof el.className === 'string' ? `.${el.className.split(' ').join('.')}` : ''} right=${Math.round(r.right)}`);
      }
    }
    return { width, scroll, culprits: culprits.slice(0, 8) };
  });
  if (report) {
    throw new Error(`${what}: the page is ${report.scroll}px wide in a ${report.width}px viewport; overflowing: ${report.culprits.join(', ')}`);
  }
}

export function log(message) {
  process.stdout.write(`# ${message}\n`);
}
