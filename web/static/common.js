// Scan2Order — helpers shared by the guest, kitchen and admin clients.
//
// Everything here is CSP-safe: no innerHTML with data, no inline styles set
// through attributes, no eval. Text that came from a user always goes through
// textContent (see `h`).

// ---------------------------------------------------------------------------
// DOM building
// ---------------------------------------------------------------------------

const FORBIDDEN_PROPS = new Set(['innerHTML', 'outerHTML', 'insertAdjacentHTML', 'srcdoc']);
// Keys always set as attributes (read-only or differently named as properties).
const ATTRIBUTE_KEYS = new Set(['role', 'for', 'list', 'form']);

/**
 * Build an element. `props` keys:
 *   class      string or array of strings (falsy entries skipped)
 *   text       textContent
 *   testid     data-testid
 *   dataset    object copied into el.dataset
 *   on         {event: handler}
 *   style      object of CSSOM properties (assigned, never as an attribute)
 *   aria-*       always an attribute ("true"/"false" kept as text)
 *   other keys   an attribute (true → present, false → absent) when the key is
 *                not a writable element property, else a property assignment
 *                (value, disabled, type, checked, ...).
 * Children: nodes, strings and numbers (as text), arrays, and null/false/undefined (skipped).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (FORBIDDEN_PROPS.has(key)) throw new Error(`h(): refusing to set ${key}`);
    switch (key) {
      case 'class':
        el.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : String(value);
        break;
      case 'text':
        el.textContent = String(value);
        break;
      case 'testid':
        el.dataset.testid = String(value);
        break;
      case 'dataset':
        for (const [k, v] of Object.entries(value)) if (v !== undefined && v !== null) el.dataset[k] = String(v);
        break;
      case 'on':
        for (const [ev, fn] of Object.entries(value)) if (fn) el.addEventListener(ev, fn);
        break;
      case 'style':
        if (typeof value !== 'object') throw new Error('h(): style must be an object');
        Object.assign(el.style, value);
        break;
      default:
        if (key.startsWith('aria-')) {
          el.setAttribute(key, String(value));
        } else if (key.includes('-') || ATTRIBUTE_KEYS.has(key) || !(key in el)) {
          if (value === true) el.setAttribute(key, '');
          else if (value !== false) el.setAttribute(key, String(value));
        } else {
          el[key] = value;
        }
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false || child === true) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replace all children of `el` with `children` (same rules as `h`). */
export function setChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** `document.getElementById` that fails loudly when the page skeleton is wrong. */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el;
}

/** Show or hide an element through the `hidden` attribute. */
export function show(el, visible = true) {
  el.hidden = !visible;
}

/**
 * Re-render a region while keeping keyboard focus: the focused element's
 * `data-focus-key` is remembered and the element with the same key in the new
 * content is focused again (with its text selection, for inputs).
 */
export function preserveFocus(container, render) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.focusKey : undefined;
  let selection = null;
  if (key && typeof active.selectionStart === 'number') {
    try { selection = [active.selectionStart, active.selectionEnd]; } catch { selection = null; }
  }
  render();
  if (!key) return;
  const next = [...container.querySelectorAll('[data-focus-key]')].find((el) => el.dataset.focusKey === key);
  if (!next) return;
  next.focus({ preventScroll: true });
  if (selection && typeof next.setSelectionRange === 'function') {
    try { next.setSelectionRange(selection[0], selection[1]); } catch { /* not a text input */ }
  }
}

/** Only http(s) and same-origin relative URLs may become links. */
export function safeUrl(url) {
  try {
    const u = new URL(String(url), location.href);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------
// Storage (never throws: private modes and full quotas just lose persistence)
// ---------------------------------------------------------------------------

function makeStore(getArea) {
  return {
    get(key, fallback = null) {
      try {
        const raw = getArea().getItem(key);
        return raw === null ? fallback : JSON.parse(raw);
      } catch {
        return fallback;
      }
    },
    set(key, value) {
      try { getArea().setItem(key, JSON.stringify(value)); } catch { /* storage unavailable */ }
    },
    remove(key) {
      try { getArea().removeItem(key); } catch { /* storage unavailable */ }
    },
  };
}

export const local = makeStore(() => window.localStorage);
export const session = makeStore(() => window.sessionStorage);

// ---------------------------------------------------------------------------
// Ids
// ---------------------------------------------------------------------------

/** A v4 UUID; crypto.randomUUID needs a secure context, so fall back to getRandomValues. */
export function uuid() {
  if (typeof crypto.randomUUID === 'function') {
    try { return crypto.randomUUID(); } catch { /* insecure context */ }
  }
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, code, message, body = {}, retryAfter = null) {
    super(message || code);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.body = body || {};
    this.retryAfter = retryAfter;
  }
}

const DEFAULT_CODES = {
  400: 'invalid_request',
  401: 'unauthenticated',
  403: 'forbidden',
  404: 'not_found',
  409: 'conflict',
  410: 'gone',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  429: 'rate_limited',
  503: 'unavailable',
};

function parseRetryAfter(value) {
  if (!value) return null;
  const secs = Number(value);
  if (Number.isFinite(secs)) return Math.max(0, Math.ceil(secs));
  const date = Date.parse(value);
  return Number.isFinite(date) ? Math.max(0, Math.ceil((date - Date.now()) / 1000)) : null;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function isRetryable(err) {
  return err instanceof ApiError && (err.status === 503 || err.status === 0);
}

/**
 * fetch() with JSON in and out and the contract's error shape turned into ApiError.
 *
 * options:
 *   body     any JSON value (sent as application/json)
 *   token    bearer token for the Authorization header
 *   headers  extra headers
 *   retry    {attempts, onRetry(err, attempt, delayMs)}: retry 503 `unavailable` and network
 *            failures with backoff (honouring Retry-After). Only for idempotent calls.
 *
 * Resolves to {status, data, headers}; data is null for 204 and 304.
 */
export async function apiRequest(method, path, options = {}) {
  const { body, token, headers = {}, retry = null, signal } = options;
  const attempts = retry ? Math.max(1, retry.attempts ?? 4) : 1;
  let delay = 500;
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await requestOnce(method, path, body, token, headers, signal);
    } catch (err) {
      if (!retry || attempt >= attempts || !isRetryable(err) || signal?.aborted) throw err;
      const wait = err.retryAfter != null ? err.retryAfter * 1000 : delay;
      if (retry.onRetry) retry.onRetry(err, attempt, wait);
      await sleep(wait);
      delay = Math.min(delay * 2, 5000);
    }
  }
}

async function requestOnce(method, path, body, token, extraHeaders, signal) {
  const headers = { Accept: 'application/json', ...extraHeaders };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store', signal };
  if (typeof Blob !== 'undefined' && body instanceof Blob) {
    // A file (a dish's photo): sent as it is, with its own type.
    headers['Content-Type'] = body.type || 'application/octet-stream';
    init.body = body;
  } else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (token) headers.Authorization = `Bearer ${token}`;

  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, 'network', "Can't reach the server.");
  }

  let data = null;
  if (res.status !== 204 && res.status !== 304) {
    const text = await res.text().catch(() => '');
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
  }
  if (res.ok || res.status === 304) return { status: res.status, data, headers: res.headers };

  const code = (data && typeof data.error === 'string' && data.error) || DEFAULT_CODES[res.status] || 'error';
  const message = (data && typeof data.message === 'string' && data.message) || '';
  throw new ApiError(res.status, code, message, data || {}, parseRetryAfter(res.headers.get('Retry-After')));
}

/** Like apiRequest, resolving to the parsed body only. */
export async function api(method, path, options = {}) {
  return (await apiRequest(method, path, options)).data;
}

/** Append query parameters (skipping null/undefined/'') to a path. */
export function withQuery(path, params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '') qs.set(k, String(v));
  }
  const s = qs.toString();
  if (!s) return path;
  return path + (path.includes('?') ? '&' : '?') + s;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

const MESSAGES = {
  item_unavailable: 'Sorry, some items in your order have just sold out.',
  not_accepting_orders: 'The restaurant is not taking orders right now.',
  invalid_code: "That code isn't right. Check the WhatsApp message and try again.",
  code_expired: 'That code has expired. Ask for a new one.',
  too_many_attempts: 'Too many wrong tries for that code. Ask for a new one.',
  invalid_transition: 'That ticket has already moved on; the board shows its current state.',
  unauthenticated: 'Your session has ended. Please sign in again.',
  invalid_credentials: 'Wrong username or password.',
  forbidden: "You don't have permission to do that.",
  slug_taken: 'That slug is already used by another restaurant. Pick another one.',
  label_taken: 'Another table of this restaurant already has that label.',
  username_taken: 'That username is already taken. Pick another one.',
  not_empty: 'This category still has menu items. Move or delete them first.',
  not_found: 'Not found. It may have been removed.',
  payload_too_large: 'That is too much to send at once.',
  unsupported_media_type: 'The server did not accept the request format.',
  allergen_conflict: 'A dish in this order contains an allergen the table declared.',
  allergy_ack_required: 'This order has allergies: confirm you read them before moving it on.',
  unavailable: 'The service is temporarily unavailable, retrying…',
  network: "Can't reach the server. Check your connection; retrying…",
};

/** A human sentence for an error (ApiError or anything else). */
export function errorMessage(err) {
  if (!(err instanceof ApiError)) return (err && err.message) || 'Something went wrong. Please try again.';
  if (err.code === 'rate_limited') {
    return err.retryAfter != null
      ? `Too many requests. Please wait ${plural(err.retryAfter, 'second')} and try again.`
      : 'Too many requests. Please wait a moment and try again.';
  }
  if (err.code === 'invalid_request' || err.code === 'invalid_image' || err.code === 'invalid_options') {
    return err.message || 'Please check the form and try again.';
  }
  return MESSAGES[err.code] || err.message || `Something went wrong (${err.status}). Please try again.`;
}

// ---------------------------------------------------------------------------
// Money and time
// ---------------------------------------------------------------------------

const formatters = new Map();

function currencyFormatter(currency) {
  const key = String(currency || '').toUpperCase();
  if (!formatters.has(key)) {
    let fmt = null;
    try {
      fmt = new Intl.NumberFormat(undefined, { style: 'currency', currency: key });
    } catch {
      fmt = null;
    }
    formatters.set(key, fmt);
  }
  return formatters.get(key);
}

/** Number of minor-unit digits of a currency (2 for EUR, 0 for JPY, 3 for KWD). */
export function currencyDigits(currency) {
  const fmt = currencyFormatter(currency);
  return fmt ? fmt.resolvedOptions().maximumFractionDigits : 2;
}

/** Format integer minor units, e.g. formatMoney(1250, 'EUR') → "€12.50". */
export function formatMoney(cents, currency) {
  const digits = currencyDigits(currency);
  const value = Number(cents) / 10 ** digits;
  const fmt = currencyFormatter(currency);
  return fmt ? fmt.format(value) : `${value.toFixed(digits)} ${String(currency || '').toUpperCase()}`.trim();
}

/** Minor units as a plain decimal string for form fields: 1250 → "12.50". */
export function centsToDecimal(cents, currency) {
  const digits = currencyDigits(currency);
  const n = Math.trunc(Number(cents) || 0);
  const sign = n < 0 ? '-' : '';
  const abs = Math.abs(n);
  if (digits === 0) return sign + String(abs);
  const scale = 10 ** digits;
  return `${sign}${Math.floor(abs / scale)}.${String(abs % scale).padStart(digits, '0')}`;
}

/**
 * Parse a decimal amount typed by a person into integer minor units, without
 * floating point: "12.5" → 1250 for EUR. Accepts a comma as decimal separator.
 * Returns null when the text is not a non-negative amount with at most the
 * currency's number of decimals.
 */
export function parseMoney(text, currency) {
  const digits = currencyDigits(currency);
  let s = String(text ?? '').trim().replace(/\s/g, '');
  if (!s.includes('.') && (s.match(/,/g) || []).length === 1) s = s.replace(',', '.');
  const m = /^(\d+)(?:\.(\d*))?$/.exec(s);
  if (!m) return null;
  const frac = m[2] || '';
  if (frac.length > digits) return null;
  const cents = Number(m[1]) * 10 ** digits + Number(frac.padEnd(digits, '0') || '0');
  return Number.isSafeInteger(cents) ? cents : null;
}

/** "3:07" or "1:02:03" for a number of seconds. */
export function formatDuration(totalSeconds) {
  const s = Math.max(0, Math.floor(totalSeconds));
  const hours = Math.floor(s / 3600);
  const mins = Math.floor((s % 3600) / 60);
  const secs = String(s % 60).padStart(2, '0');
  return hours > 0 ? `${hours}:${String(mins).padStart(2, '0')}:${secs}` : `${mins}:${secs}`;
}

/** Local date/time for an RFC 3339 string ("" when unparsable). */
export function formatDateTime(iso, options = { dateStyle: 'medium', timeStyle: 'short' }) {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return '';
  try { return new Intl.DateTimeFormat(undefined, options).format(new Date(t)); } catch { return new Date(t).toLocaleString(); }
}

// ---------------------------------------------------------------------------
// Live socket with resume
// ---------------------------------------------------------------------------

const BACKOFF_START_MS = 500;
// Capped so a page follows the server back within a second of it being ready (each retry waits half to
// all of the current step); a refused connect costs the server nothing.
const BACKOFF_MAX_MS = 800;
const CONNECT_TIMEOUT_MS = 10_000;
const STABLE_AFTER_MS = 5_000;

/**
 * A WebSocket that reconnects with backoff (0.5 s doubling to 10 s, jittered)
 * and resumes its event stream.
 *
 * It remembers the `epoch` and the last `seq` it saw. A reconnect opens
 * `path?...&epoch=<epoch>&since=<seq>`; the server then replays what was missed
 * or sends a fresh `snapshot`. Events whose seq is not newer than the last one
 * seen in the same epoch are dropped, so a replay that overlaps a snapshot never
 * applies anything twice.
 *
 * Callbacks:
 *   onMessage(msg)          every message that passed the ordering check
 *   onStatus(status)        'connecting' | 'open' (first message received) | 'reconnecting' | 'stopped'
 *   onClose(code, reason)   return false to stop reconnecting (e.g. 1008 policy)
 *   params()                extra query parameters for each connect (token, restaurant_id, ...)
 */
export class LiveSocket {
  constructor({ path, params = () => ({}), onMessage = () => {}, onStatus = () => {}, onClose = () => true }) {
    this.path = path;
    this.params = params;
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.onClose = onClose;
    this.epoch = null;
    this.seq = null;
    this.ws = null;
    this.status = 'stopped';
    this.attempt = 0;
    this.retryTimer = null;
    this.connectTimer = null;
    this.openedAt = 0;
    this.wanted = false;
    this.wakeUp = () => {
      if (this.wanted && !this.ws && document.visibilityState !== 'hidden') this.reconnectNow();
    };
  }

  get connected() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  /** Connect (keeps epoch/seq, so a stop()/start() pair resumes). */
  start() {
    if (this.wanted) return;
    this.wanted = true;
    window.addEventListener('online', this.wakeUp);
    document.addEventListener('visibilitychange', this.wakeUp);
    this.connect();
  }

  stop() {
    this.wanted = false;
    window.removeEventListener('online', this.wakeUp);
    document.removeEventListener('visibilitychange', this.wakeUp);
    clearTimeout(this.retryTimer);
    clearTimeout(this.connectTimer);
    this.retryTimer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(1000, 'bye'); } catch { /* already closed */ }
    }
    this.setStatus('stopped');
  }

  /** Forget the stream position: the next connection gets a snapshot. */
  resetPosition() {
    this.epoch = null;
    this.seq = null;
  }

  /** Send a JSON message; false when the socket is not open. */
  send(message) {
    if (!this.connected) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  reconnectNow() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.wanted && !this.ws) this.connect();
  }

  url() {
    const u = new URL(this.path, location.href);
    u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    for (const [k, v] of Object.entries(this.params() || {})) {
      if (v !== undefined && v !== null && v !== '') u.searchParams.set(k, String(v));
    }
    if (this.epoch !== null && this.seq !== null) {
      u.searchParams.set('epoch', String(this.epoch));
      u.searchParams.set('since', String(this.seq));
    }
    return u.href;
  }

  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.onStatus(status);
  }

  connect() {
    this.setStatus(this.attempt === 0 && this.epoch === null ? 'connecting' : 'reconnecting');
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.connectTimer = setTimeout(() => {
      if (this.ws === ws && ws.readyState === WebSocket.CONNECTING) ws.close();
      if (this.ws === ws && ws.readyState !== WebSocket.OPEN) this.dropSocket(ws, 1006, 'connect timeout');
    }, CONNECT_TIMEOUT_MS);
    ws.onopen = () => {
      clearTimeout(this.connectTimer);
      this.openedAt = Date.now();
    };
    ws.onmessage = (event) => {
      // "open" once the server has spoken (hello), not merely on the handshake:
      // a server that accepts and drops at once never flips the banner off.
      this.setStatus('open');
      this.receive(event.data);
    };
    ws.onerror = () => { /* a close event follows */ };
    ws.onclose = (event) => this.dropSocket(ws, event.code, event.reason);
  }

  dropSocket(ws, code, reason) {
    if (this.ws !== ws) return;
    clearTimeout(this.connectTimer);
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    this.ws = null;
    if (this.openedAt && Date.now() - this.openedAt >= STABLE_AFTER_MS) this.attempt = 0;
    this.openedAt = 0;
    if (!this.wanted) return;
    let keepGoing = true;
    try { keepGoing = this.onClose(code, reason) !== false; } catch { keepGoing = true; }
    if (!keepGoing) {
      this.stop();
      return;
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    this.setStatus('reconnecting');
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** this.attempt);
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempt += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.wanted && !this.ws) this.connect();
    }, delay);
  }

  receive(raw) {
    let msg;
    try { msg = JSON.parse(raw); } catch { return; }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;
    switch (msg.type) {
      case 'hello':
        if (msg.epoch !== undefined && msg.epoch !== this.epoch) {
          // New epoch (first connection or server restart): a snapshot follows.
          this.epoch = msg.epoch;
          this.seq = null;
        }
        // Same epoch and a position to resume from: the server replays what was missed right behind
        // this hello (or, when it cannot, sends a snapshot).
        msg.resumed = this.seq !== null;
        break;
      case 'snapshot':
        if (msg.epoch !== undefined) this.epoch = msg.epoch;
        if (typeof msg.seq === 'number') this.seq = msg.seq;
        break;
      default:
        if (typeof msg.seq === 'number') {
          if (this.seq !== null && msg.seq <= this.seq) return; // already applied
          this.seq = msg.seq;
        }
    }
    this.onMessage(msg);
  }
}

// ---------------------------------------------------------------------------
// Small UI pieces: toasts and confirmation
// ---------------------------------------------------------------------------

const MAX_TOASTS = 3;

/** Show a transient message in the page's #toasts region. kind: 'info' | 'ok' | 'warn' | 'error'. */
export function toast(message, kind = 'info', ms = 5000) {
  let region = document.getElementById('toasts');
  if (!region) {
    region = h('div', { id: 'toasts', class: 'toasts', 'aria-live': 'polite', testid: 'toasts' });
    document.body.appendChild(region);
  }
  const item = h('div', { class: ['toast', `toast-${kind}`], role: kind === 'error' ? 'alert' : 'status', testid: 'toast' }, message);
  region.appendChild(item);
  // A burst of actions must not bury the page under messages: keep the newest few.
  while (region.children.length > MAX_TOASTS) region.firstElementChild.remove();
  setTimeout(() => item.remove(), ms);
  return item;
}

/**
 * Ask for confirmation in a modal <dialog>. Resolves true when confirmed.
 * options: {title, confirmLabel, cancelLabel, danger}
 */
export function confirmDialog(message, options = {}) {
  const { title = 'Are you sure?', confirmLabel = 'Confirm', cancelLabel = 'Keep', danger = false } = options;
  if (typeof HTMLDialogElement !== 'function') return Promise.resolve(window.confirm(message));
  return new Promise((resolve) => {
    let answer = false;
    const okButton = h('button', { type: 'button', class: ['btn', danger ? 'btn-danger' : 'btn-primary'], testid: 'confirm-ok', text: confirmLabel });
    const cancelButton = h('button', { type: 'button', class: 'btn btn-secondary', testid: 'confirm-cancel', text: cancelLabel });
    const dialog = h('dialog', { class: 'dialog', testid: 'confirm-dialog', 'aria-labelledby': 'confirm-title' },
      h('h2', { id: 'confirm-title', class: 'dialog-title', text: title }),
      h('p', { class: 'dialog-text', text: message }),
      h('div', { class: 'dialog-actions' }, cancelButton, okButton));
    okButton.addEventListener('click', () => { answer = true; dialog.close(); });
    cancelButton.addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(answer);
    });
    document.body.appendChild(dialog);
    dialog.showModal();
    cancelButton.focus();
  });
}

// ---------------------------------------------------------------------------
// Staff session (kitchen and admin share it)
// ---------------------------------------------------------------------------

const STAFF_TOKEN_KEY = 's2o.staff_token';

/**
 * Staff authentication: the server sets the HttpOnly `s2o_session` cookie at
 * login; the returned token is also kept in sessionStorage and sent as a
 * bearer token. `onUnauthenticated` runs whenever a call answers 401.
 */
export class StaffSession {
  constructor() {
    this.token = session.get(STAFF_TOKEN_KEY, null);
    this.user = null;
    this.onUnauthenticated = () => {};
  }

  /** An authenticated call: resolves to the body, or to {status, data, headers} with `full: true`. */
  async request(method, path, options = {}) {
    try {
      const res = await apiRequest(method, path, { ...options, token: this.token || undefined });
      return options.full ? res : res.data;
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        this.forget();
        this.onUnauthenticated(err);
      }
      throw err;
    }
  }

  /** The signed-in user, or null when there is none. Other errors propagate. */
  async me() {
    try {
      const data = await api('GET', '/api/v1/auth/me', { token: this.token || undefined, retry: { attempts: 4 } });
      this.user = data && data.user ? data.user : data;
      return this.user;
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        this.forget();
        return null;
      }
      throw err;
    }
  }

  async login(username, password) {
    const data = await api('POST', '/api/v1/auth/login', { body: { username, password } });
    this.token = data.token || null;
    if (this.token) session.set(STAFF_TOKEN_KEY, this.token);
    this.user = data.user || (await this.me());
    return this.user;
  }

  async logout() {
    try {
      await api('POST', '/api/v1/auth/logout', { token: this.token || undefined });
    } catch {
      /* the session is dropped locally either way */
    }
    this.forget();
  }

  forget() {
    this.token = null;
    this.user = null;
    session.remove(STAFF_TOKEN_KEY);
  }
}

/**
 * Wire a static login form (#login-form with username/password inputs, a
 * submit button and an error element) to a StaffSession.
 */
export function wireLoginForm(form, staff, onSignedIn) {
  const errorEl = form.querySelector('[data-testid="login-error"]');
  const submit = form.querySelector('[type="submit"]');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const username = form.elements.username.value.trim();
    const password = form.elements.password.value;
    errorEl.textContent = '';
    if (!username || !password) {
      errorEl.textContent = 'Enter your username and password.';
      return;
    }
    submit.disabled = true;
    try {
      const user = await staff.login(username, password);
      form.elements.password.value = '';
      await onSignedIn(user);
    } catch (err) {
      errorEl.textContent = errorMessage(err);
      form.elements.password.select();
    } finally {
      submit.disabled = false;
    }
  });
}
