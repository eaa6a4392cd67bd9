// Scan2Order kitchen display, served at /kitchen.
//
// Tickets arrive over /ws/kitchen (snapshot, then events; resumed after a
// reconnect). A tap on a ticket is held for 4 s with an Undo button before the
// status change is sent (socket `set_status`, or REST when the socket is down).
// The board is "in sync" only between a snapshot and the loss of its socket:
// until then it says so loudly (with when it last was in sync) and never shows
// the "no open tickets" state, which only a snapshot can prove.
// A ticket with declared allergies carries a banner, and cannot move on from
// "new" until a cook taps "Allergies read": the change then carries the
// acknowledgement the server requires.

import {
  h, byId, show, setChildren, local, uuid, ApiError, errorMessage, withQuery, formatMoney,
  formatDuration, formatDateTime, LiveSocket, toast, confirmDialog, StaffSession, wireLoginForm,
} from '/static/common.js';
import { allergenLabel } from '/static/menu-choices.js';

const NEXT_STATUS = { placed: 'accepted', accepted: 'preparing', preparing: 'ready', ready: 'served' };
const ADVANCE_LABEL = { placed: 'Accept', accepted: 'Start preparing', preparing: 'Mark ready', ready: 'Mark served' };
const STATUS_LABEL = { placed: 'New', accepted: 'Accepted', preparing: 'Preparing', ready: 'Ready', served: 'Served', cancelled: 'Cancelled' };
const HOLD_VERB = { accepted: 'Accepting', preparing: 'Starting', ready: 'Marking ready', served: 'Marking served', cancelled: 'Cancelling' };
const CANCELLABLE = new Set(['placed', 'accepted', 'preparing']);
const FINAL = new Set(['served', 'cancelled']);
const HOLD_MS = 4000;
const ACK_TIMEOUT_MS = 8000;
const FRESH_MS = 8000;
const POLL_AFTER_MS = 15000;
const DEFAULT_WARN_S = 600;
const DEFAULT_LATE_S = 1200;
const RESTAURANT_KEY = 's2o.kitchen.restaurant_id';

// ---------------------------------------------------------------------------
// Sound: a generated WebAudio chime, enabled by an explicit tap
// ---------------------------------------------------------------------------

class Beeper {
  constructor() {
    this.ctx = null;
    this.enabled = false;
    this.lastBeep = 0;
  }

  async enable() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) throw new Error('This browser cannot play sounds.');
    if (!this.ctx) this.ctx = new Ctx();
    await this.ctx.resume();
    this.enabled = true;
  }

  disable() {
    this.enabled = false;
  }

  beep() {
    if (!this.enabled || !this.ctx) return;
    const now = Date.now();
    if (now - this.lastBeep < 1200) return; // a burst of tickets chimes once
    this.lastBeep = now;
    if (this.ctx.state === 'suspended') this.ctx.resume().catch(() => {});
    const t0 = this.ctx.currentTime + 0.02;
    for (const [freq, at] of [[880, 0], [1175, 0.16], [1568, 0.32]]) {
      const osc = this.ctx.createOscillator();
      const gain = this.ctx.createGain();
      osc.type = 'triangle';
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, t0 + at);
      gain.gain.exponentialRampToValueAtTime(0.5, t0 + at + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t0 + at + 0.22);
      osc.connect(gain).connect(this.ctx.destination);
      osc.start(t0 + at);
      osc.stop(t0 + at + 0.25);
    }
  }
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

const staff = new StaffSession();
const beeper = new Beeper();
const state = {
  user: null,
  restaurantId: null,
  restaurant: null,
  menu: null,
  tickets: new Map(), // order id → order (open tickets only)
  holds: new Map(), // order id → {status, from, startedAt, timer}
  inflight: new Map(), // request id → {orderId, status, ticketNo, timer}
  sending: new Set(), // order ids with a status change on the wire
  fresh: new Map(), // order id → arrival time (flash cue)
  clockOffset: 0,
  snapshots: 0,
  socketStatus: 'connecting',
  inSync: false, // a snapshot arrived on the socket that is open now
  lastSyncAt: 0, // when the board last matched the server (a snapshot, a resume, a poll)
  menuBusy: new Set(),
  allergiesRead: new Set(), // order ids whose allergies a cook confirmed reading on this screen
  acceptingBusy: false,
  disconnectedAt: 0,
};
const ticketEls = new Map(); // order id → {el, sig, timerEl, holdEl}
const dom = {};
let socket = null;
let tickTimer = null;
let pollTimer = null;
let wakeLock = null;

const isAdmin = () => state.user && state.user.role === 'admin';
const kitchenPath = (path) => (isAdmin() ? withQuery(path, { restaurant_id: state.restaurantId }) : path);
const money = (cents) => formatMoney(cents, (state.restaurant && state.restaurant.currency) || 'EUR');

// ---------------------------------------------------------------------------
// Start-up, sign-in, restaurant choice
// ---------------------------------------------------------------------------

function collectDom() {
  for (const id of ['login-view', 'login-form', 'picker-view', 'picker-form', 'restaurant-select', 'loading-view',
    'board-view', 'kitchen-restaurant-name', 'accepting-state', 'connection-state', 'toggle-accepting',
    'enable-sound', 'toggle-allday', 'toggle-menu', 'switch-restaurant', 'connection-banner', 'sync-banner', 'tickets',
    'tickets-empty', 'tickets-unsynced', 'all-day-panel', 'all-day-list', 'menu-panel', 'menu-panel-list']) {
    dom[id.replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = byId(id);
  }
}

function setView(name) {
  show(dom.loadingView, name === 'loading');
  show(dom.loginView, name === 'login');
  show(dom.pickerView, name === 'picker');
  show(dom.boardView, name === 'board');
  if (name === 'login') {
    const input = dom.loginForm.elements.username;
    setTimeout(() => input.focus(), 0);
  }
}

async function boot() {
  collectDom();
  wireControls();
  staff.onUnauthenticated = () => sessionEnded('Your session has ended. Please sign in again.');
  wireLoginForm(dom.loginForm, staff, (user) => signedIn(user, { autoOpen: true }));
  let user;
  try {
    user = await staff.me();
  } catch (err) {
    dom.loadingView.replaceChildren(h('p', { class: 'muted', text: `${errorMessage(err)} Retrying…` }));
    setTimeout(boot2, 5000);
    return;
  }
  if (user) await signedIn(user, { autoOpen: true });
  else setView('login');
}

/** Retry of the first /auth/me without wiring the controls twice. */
async function boot2() {
  try {
    const user = await staff.me();
    if (user) await signedIn(user, { autoOpen: true });
    else setView('login');
  } catch (err) {
    dom.loadingView.replaceChildren(h('p', { class: 'muted', text: `${errorMessage(err)} Retrying…` }));
    setTimeout(boot2, 5000);
  }
}

async function signedIn(user, { autoOpen }) {
  state.user = user;
  if (isAdmin()) {
    show(dom.switchRestaurant, true);
    await showPicker(autoOpen);
  } else if (user && user.restaurant_id !== undefined && user.restaurant_id !== null) {
    show(dom.switchRestaurant, false);
    await openBoard(String(user.restaurant_id));
  } else {
    await staff.logout();
    setView('login');
    dom.loginForm.querySelector('[data-testid="login-error"]').textContent = 'This account has no kitchen to show.';
  }
}

async function showPicker(autoOpen) {
  const errorEl = dom.pickerForm.querySelector('[data-testid="picker-error"]');
  errorEl.textContent = '';
  setView('picker');
  let restaurants = [];
  try {
    const data = await staff.request('GET', '/api/v1/admin/restaurants', { retry: { attempts: 3 } });
    restaurants = (data && data.restaurants) || [];
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) errorEl.textContent = errorMessage(err);
    return;
  }
  setChildren(dom.restaurantSelect, restaurants.map((r) =>
    h('option', { value: String(r.id), text: r.slug ? `${r.name} (${r.slug})` : r.name })));
  if (!restaurants.length) errorEl.textContent = 'There are no restaurants yet. Create one in the admin console.';
  const saved = local.get(RESTAURANT_KEY);
  if (saved && restaurants.some((r) => String(r.id) === saved)) {
    dom.restaurantSelect.value = saved;
    if (autoOpen) await openBoard(saved);
  }
}

async function openBoard(restaurantId) {
  resetBoard();
  state.restaurantId = restaurantId;
  if (isAdmin()) local.set(RESTAURANT_KEY, restaurantId);
  setView('board');
  renderAll();
  const ok = await loadRestaurant();
  if (!ok) return;
  startSocket();
  clearInterval(tickTimer);
  tickTimer = setInterval(tick, 1000);
  requestWakeLock();
}

function resetBoard() {
  // Held taps are dropped (never sent); in-flight requests are forgotten before the
  // socket stops so that stopping does not replay them over REST.
  for (const hold of state.holds.values()) clearTimeout(hold.timer);
  for (const req of state.inflight.values()) clearTimeout(req.timer);
  state.holds.clear();
  state.inflight.clear();
  if (socket) socket.stop();
  socket = null;
  clearInterval(tickTimer);
  clearInterval(pollTimer);
  pollTimer = null;
  state.sending.clear();
  state.tickets.clear();
  state.fresh.clear();
  state.restaurant = null;
  state.menu = null;
  state.snapshots = 0;
  state.inSync = false;
  state.lastSyncAt = 0;
  state.disconnectedAt = 0;
  ticketEls.clear();
  dom.tickets.replaceChildren();
  show(dom.connectionBanner, false);
  show(dom.syncBanner, false);
}

function sessionEnded(message) {
  resetBoard();
  state.user = null;
  setView('login');
  if (message) dom.loginForm.querySelector('[data-testid="login-error"]').textContent = message;
}

async function signOut() {
  resetBoard();
  await staff.logout();
  state.user = null;
  setView('login');
}

/** GET /api/v1/kitchen/restaurant: restaurant settings and the menu. */
async function loadRestaurant() {
  const started = Date.now();
  try {
    const res = await staff.request('GET', kitchenPath('/api/v1/kitchen/restaurant'), { full: true, retry: { attempts: 4 } });
    estimateClockOffset(res.headers.get('Date'), started, Date.now());
    state.restaurant = res.data.restaurant;
    state.menu = res.data.menu || { categories: [] };
    renderHeader();
    renderMenuPanel();
    renderTickets();
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return false;
    toast(errorMessage(err), 'error', 8000);
    if (err instanceof ApiError && (err.status === 403 || err.status === 404) && isAdmin()) {
      local.remove(RESTAURANT_KEY);
      await showPicker(false);
      return false;
    }
    setTimeout(() => { if (state.restaurantId && !state.restaurant) openBoard(state.restaurantId); }, 5000);
    return false;
  }
}

/** Ticket ages are measured on the server's clock: estimate the offset from the Date header. */
function estimateClockOffset(dateHeader, sentAt, receivedAt) {
  const serverTime = Date.parse(dateHeader || '');
  if (!Number.isFinite(serverTime)) return;
  const offset = serverTime + 500 - (sentAt + receivedAt) / 2; // Date has one-second resolution
  state.clockOffset = Math.abs(offset) > 1500 ? offset : 0;
}

// ---------------------------------------------------------------------------
// Socket
// ---------------------------------------------------------------------------

function startSocket() {
  socket = new LiveSocket({
    path: '/ws/kitchen',
    params: () => ({ token: staff.token, restaurant_id: isAdmin() ? state.restaurantId : null }),
    onMessage: handleMessage,
    onStatus: socketStatus,
    onClose: (code) => {
      if (code !== 1008) return true;
      checkSessionAfterPolicyClose();
      return false;
    },
  });
  socket.start();
}

async function checkSessionAfterPolicyClose() {
  const current = socket;
  try {
    const user = await staff.me();
    if (!user) {
      sessionEnded('Your session has ended. Please sign in again.');
      return;
    }
  } catch {
    /* server unreachable: keep trying */
  }
  setTimeout(() => { if (socket === current) current.start(); }, 3000);
}

function socketStatus(status) {
  const down = status === 'reconnecting' || status === 'stopped';
  // A new socket is in sync only once its snapshot arrives.
  if (status !== 'open') state.inSync = false;
  state.socketStatus = status;
  show(dom.connectionBanner, status === 'reconnecting');
  renderTickets(); // the empty states and the sync notice depend on it
  if (down) {
    if (!state.disconnectedAt) state.disconnectedAt = Date.now();
    // Requests sent on the lost socket may or may not have arrived: finish them over REST.
    for (const requestId of [...state.inflight.keys()]) fallbackToRest(requestId);
    if (!pollTimer && status === 'reconnecting') pollTimer = setInterval(pollWhileDown, 5000);
  } else {
    state.disconnectedAt = 0;
    clearInterval(pollTimer);
    pollTimer = null;
  }
}

/** While the socket stays down, keep the board current from GET /api/v1/kitchen/orders. */
async function pollWhileDown() {
  if (!state.disconnectedAt || Date.now() - state.disconnectedAt < POLL_AFTER_MS) return;
  try {
    const data = await staff.request('GET', kitchenPath('/api/v1/kitchen/orders'));
    if (!state.disconnectedAt) return; // the socket came back meanwhile
    state.lastSyncAt = Date.now();
    replaceTickets((data && data.orders) || [], true);
  } catch {
    /* still down */
  }
}

function replaceTickets(orders, cueNew) {
  const before = new Set(state.tickets.keys());
  state.tickets = new Map();
  for (const order of orders) {
    if (!order || FINAL.has(order.status)) continue;
    const id = String(order.id);
    state.tickets.set(id, order);
    if (cueNew && !before.has(id)) markFresh(id);
  }
  for (const [id, hold] of state.holds) {
    if (!state.tickets.has(id)) {
      clearTimeout(hold.timer);
      state.holds.delete(id);
    }
  }
  renderTickets();
}

function handleMessage(msg) {
  switch (msg.type) {
    case 'hello':
      // A resume replays what was missed right behind this hello; when the server cannot resume, its
      // snapshot follows and replaces the board.
      if (msg.resumed) {
        state.inSync = true;
        state.lastSyncAt = Date.now();
        renderTickets();
      }
      break;
    case 'snapshot': {
      const cue = state.snapshots > 0;
      state.inSync = true;
      state.lastSyncAt = Date.now();
      replaceTickets(msg.orders || [], cue);
      // Menu, availability and pause events are not in the snapshot: any that happened between loading
      // the restaurant and this subscription (the first one, or a reconnect) were missed. Reload them.
      loadRestaurant();
      state.snapshots += 1;
      break;
    }
    case 'order_created': {
      const order = msg.order;
      if (!order) break;
      const id = String(order.id);
      const isNew = !state.tickets.has(id);
      if (FINAL.has(order.status)) state.tickets.delete(id);
      else state.tickets.set(id, order);
      if (isNew && !FINAL.has(order.status)) markFresh(id);
      renderTickets();
      break;
    }
    case 'order_status':
      applyStatus(String(msg.order_id), msg.status, msg.updated_at, msg.allergy_ack);
      break;
    case 'menu_item':
      setItemAvailable(String(msg.item_id), msg.available !== false);
      break;
    case 'menu_option':
      setOptionAvailable(String(msg.option_id), msg.available !== false);
      break;
    case 'restaurant':
      if (state.restaurant) state.restaurant.accepting_orders = msg.accepting_orders !== false;
      renderHeader();
      break;
    case 'menu':
      if (!state.menu || String(msg.version) !== String(state.menu.version)) loadRestaurant();
      break;
    case 'ack':
      settleRequest(msg.request_id, null);
      break;
    case 'error':
      if (msg.request_id && state.inflight.has(msg.request_id)) settleRequest(msg.request_id, msg);
      else if (msg.message || msg.error) toast(msg.message || errorMessage(new ApiError(0, msg.error, '')), 'error');
      break;
    default:
      break;
  }
}

function applyStatus(orderId, status, updatedAt, allergyAck) {
  const order = state.tickets.get(orderId);
  if (!order) return;
  order.status = status;
  if (updatedAt) order.updated_at = updatedAt;
  if (allergyAck) order.allergy_ack = allergyAck;
  if (FINAL.has(status)) state.tickets.delete(orderId);
  const hold = state.holds.get(orderId);
  if (hold && hold.from !== status) {
    clearTimeout(hold.timer);
    state.holds.delete(orderId);
    toast(`Ticket ${order.ticket_no} was changed on another screen; your tap was not sent.`, 'warn');
  }
  renderTickets();
}

function applyOrder(order) {
  const id = String(order.id);
  if (FINAL.has(order.status)) state.tickets.delete(id);
  else state.tickets.set(id, order);
}

function markFresh(id) {
  state.fresh.set(id, Date.now());
  beeper.beep();
  setTimeout(() => {
    state.fresh.delete(id);
    renderTickets();
  }, FRESH_MS);
}

// ---------------------------------------------------------------------------
// Status changes: hold with Undo, then socket (or REST)
// ---------------------------------------------------------------------------

function hold(orderId, status) {
  const order = state.tickets.get(orderId);
  if (!order || state.holds.has(orderId) || state.sending.has(orderId)) return;
  const timer = setTimeout(() => {
    const held = state.holds.get(orderId);
    state.holds.delete(orderId);
    if (held) commit(orderId, held.status, held.from);
  }, HOLD_MS);
  state.holds.set(orderId, { status, from: order.status, startedAt: Date.now(), timer });
  renderTickets();
}

function undo(orderId) {
  const held = state.holds.get(orderId);
  if (!held) return;
  clearTimeout(held.timer);
  state.holds.delete(orderId);
  renderTickets();
}

async function askCancel(orderId) {
  const order = state.tickets.get(orderId);
  if (!order) return;
  const ok = await confirmDialog(`Cancel ticket ${order.ticket_no} for table ${order.table_label}? The guest will be told.`, {
    title: 'Cancel this ticket?', confirmLabel: 'Cancel ticket', cancelLabel: 'Keep ticket', danger: true,
  });
  if (ok && state.tickets.has(orderId)) hold(orderId, 'cancelled');
}

/** The order waits for the kitchen to acknowledge its allergies before it leaves "new". */
function needsAllergyAck(order) {
  return Array.isArray(order.allergies) && order.allergies.length > 0 && !order.allergy_ack;
}

function readAllergies(orderId) {
  state.allergiesRead.add(orderId);
  renderTickets();
}

function commit(orderId, status, from) {
  const order = state.tickets.get(orderId);
  if (!order) {
    renderTickets();
    return;
  }
  if (order.status !== from) {
    toast(`Ticket ${order.ticket_no} was changed on another screen; your tap was not sent.`, 'warn');
    renderTickets();
    return;
  }
  state.sending.add(orderId);
  // Read on this screen, and not a cancellation: the change acknowledges the allergies.
  const allergyAck = status !== 'cancelled' && state.allergiesRead.has(orderId);
  if (socket && socket.connected) {
    const requestId = uuid();
    state.inflight.set(requestId, {
      orderId, status, ticketNo: order.ticket_no, allergyAck,
      timer: setTimeout(() => fallbackToRest(requestId), ACK_TIMEOUT_MS),
    });
    socket.send({ type: 'set_status', request_id: requestId, order_id: order.id, status, allergy_ack: allergyAck });
  } else {
    sendViaRest(orderId, status, order.ticket_no, false, allergyAck);
  }
  renderTickets();
}

function settleRequest(requestId, error) {
  const req = state.inflight.get(requestId);
  if (!req) return;
  clearTimeout(req.timer);
  state.inflight.delete(requestId);
  state.sending.delete(req.orderId);
  if (error) reportStatusError(req.ticketNo, new ApiError(0, error.error || 'error', error.message || ''));
  renderTickets();
}

function fallbackToRest(requestId) {
  const req = state.inflight.get(requestId);
  if (!req) return;
  clearTimeout(req.timer);
  state.inflight.delete(requestId);
  sendViaRest(req.orderId, req.status, req.ticketNo, true, req.allergyAck);
}

/** `isRetry`: the socket may already have applied it, so invalid_transition is expected and quiet. */
async function sendViaRest(orderId, status, ticketNo, isRetry, allergyAck = false) {
  state.sending.add(orderId);
  try {
    const order = await staff.request('POST', kitchenPath(`/api/v1/kitchen/orders/${encodeURIComponent(orderId)}/status`), {
      body: { status, allergy_ack: allergyAck }, retry: { attempts: 3 },
    });
    if (order && order.id !== undefined) applyOrder(order);
  } catch (err) {
    if (!(isRetry && err instanceof ApiError && err.code === 'invalid_transition')) reportStatusError(ticketNo, err);
  } finally {
    state.sending.delete(orderId);
    renderTickets();
  }
}

function reportStatusError(ticketNo, err) {
  if (err instanceof ApiError && err.status === 401) return;
  toast(`Ticket ${ticketNo}: ${errorMessage(err)}`, 'error', 7000);
}

// ---------------------------------------------------------------------------
// Rendering: tickets
// ---------------------------------------------------------------------------

function sortedTickets() {
  return [...state.tickets.values()].sort((a, b) => {
    const ta = Date.parse(a.created_at) || 0;
    const tb = Date.parse(b.created_at) || 0;
    return ta - tb || Number(a.ticket_no) - Number(b.ticket_no);
  });
}

function thresholds() {
  const r = state.restaurant || {};
  const warn = Number.isFinite(r.ticket_warn_after_s) ? r.ticket_warn_after_s : DEFAULT_WARN_S;
  const late = Number.isFinite(r.ticket_late_after_s) ? r.ticket_late_after_s : DEFAULT_LATE_S;
  return { warn, late };
}

function ageSeconds(order) {
  const created = Date.parse(order.created_at);
  return Number.isFinite(created) ? (Date.now() + state.clockOffset - created) / 1000 : 0;
}

function renderTickets() {
  const orders = sortedTickets();
  const keep = new Set();
  let previous = null;
  for (const order of orders) {
    const id = String(order.id);
    keep.add(id);
    const held = state.holds.get(id);
    const sig = [order.status, order.updated_at, held ? held.status : '', state.sending.has(id), state.fresh.has(id),
      order.items ? order.items.length : 0, state.allergiesRead.has(id), !!order.allergy_ack].join('|');
    let entry = ticketEls.get(id);
    if (!entry || entry.sig !== sig) {
      const built = buildTicket(order, held);
      if (entry) entry.el.replaceWith(built.el);
      entry = { ...built, sig };
      ticketEls.set(id, entry);
    }
    // Keep DOM order oldest first without touching elements already in place.
    const expectedNext = previous ? previous.nextSibling : dom.tickets.firstChild;
    if (expectedNext !== entry.el) dom.tickets.insertBefore(entry.el, expectedNext);
    previous = entry.el;
  }
  for (const [id, entry] of ticketEls) {
    if (!keep.has(id)) {
      entry.el.remove();
      ticketEls.delete(id);
    }
  }
  show(dom.ticketsEmpty, orders.length === 0 && state.inSync);
  show(dom.ticketsUnsynced, orders.length === 0 && !state.inSync);
  renderSync();
  updateTimers();
  renderAllDay();
}

/** The loud notice of a board that is not in sync, saying since when (or that it never was). */
function renderSync() {
  // "Live" only once in sync: a socket that is open but has not brought its snapshot says so.
  const status = state.socketStatus;
  const live = status === 'open' && state.inSync;
  dom.connectionState.textContent = live ? 'Live' : status === 'open' ? 'Syncing…' : status === 'connecting' ? 'Connecting…' : 'Offline';
  dom.connectionState.className = `pill ${live ? 'pill-ok' : status === 'open' || status === 'connecting' ? 'pill-muted' : 'pill-danger'}`;
  const reconnecting = !dom.connectionBanner.hidden;
  const since = state.lastSyncAt
    ? new Date(state.lastSyncAt).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })
    : '';
  if (reconnecting) {
    dom.connectionBanner.textContent = since
      ? `Disconnected — reconnecting… Tickets may be missing: last in sync at ${since}.`
      : 'Disconnected — reconnecting… Tickets are not loaded yet.';
  }
  show(dom.syncBanner, !state.inSync && !reconnecting);
  dom.syncBanner.textContent = since
    ? `Not in sync — catching up. Tickets may be missing: last in sync at ${since}.`
    : 'Loading tickets… The board is not in sync yet: tickets may be missing.';
}

function buildTicket(order, held) {
  const id = String(order.id);
  const status = order.status;
  const sending = state.sending.has(id);
  const freshAt = state.fresh.get(id);
  const items = Array.isArray(order.items) ? order.items : [];
  const timerEl = h('span', { class: 'ticket-timer', testid: 'ticket-timer', title: 'Time since the order came in' });
  let holdEl = null;

  let actions;
  if (held) {
    const elapsed = Date.now() - held.startedAt;
    const progress = h('div', { class: 'hold-progress', style: { animationDuration: `${HOLD_MS}ms`, animationDelay: `${-elapsed}ms` } });
    holdEl = h('span', { class: 'hold-seconds' });
    actions = h('div', { class: ['ticket-hold', held.status === 'cancelled' && 'is-cancel'], testid: 'ticket-pending', role: 'status' },
      progress,
      h('span', { class: 'hold-text' }, `${HOLD_VERB[held.status] || 'Updating'}… `, holdEl),
      h('button', {
        type: 'button', class: 'btn btn-warning btn-lg', testid: 'ticket-undo',
        'aria-label': `Undo: ticket ${order.ticket_no}`, on: { click: () => undo(id) },
      }, 'Undo'));
  } else if (status === 'placed' && needsAllergyAck(order) && !state.allergiesRead.has(id)) {
    // One tap to confirm the allergies were read, then the ticket can move on.
    actions = h('div', { class: 'ticket-actions' },
      h('button', {
        type: 'button', class: 'btn btn-lg btn-allergy-read', testid: 'allergy-read', disabled: sending,
        'aria-label': `Allergies read: ticket ${order.ticket_no}`, on: { click: () => readAllergies(id) },
      }, 'Allergies read'),
      h('button', {
        type: 'button', class: 'btn btn-ghost btn-cancel', testid: 'ticket-cancel', disabled: sending,
        'aria-label': `Cancel ticket ${order.ticket_no}`, on: { click: () => askCancel(id) },
      }, 'Cancel'));
  } else {
    const next = NEXT_STATUS[status];
    actions = h('div', { class: 'ticket-actions' },
      next ? h('button', {
        type: 'button', class: ['btn', 'btn-lg', 'btn-advance', `advance-to-${next}`], testid: 'ticket-advance',
        disabled: sending, dataset: { nextStatus: next },
        on: { click: () => hold(id, next) },
      }, sending ? 'Sending…' : ADVANCE_LABEL[status]) : null,
      CANCELLABLE.has(status) ? h('button', {
        type: 'button', class: 'btn btn-ghost btn-cancel', testid: 'ticket-cancel', disabled: sending,
        'aria-label': `Cancel ticket ${order.ticket_no}`, on: { click: () => askCancel(id) },
      }, 'Cancel') : null);
  }

  const el = h('article', {
    class: ['ticket', `ticket-${status}`, freshAt && 'ticket-new', held && 'is-held'],
    testid: 'ticket',
    dataset: { orderId: id, status, ticketNo: order.ticket_no },
    'aria-label': `Ticket ${order.ticket_no}, table ${order.table_label}`,
    style: freshAt ? { animationDelay: `${-(Date.now() - freshAt)}ms` } : undefined,
  },
  h('header', { class: 'ticket-head' },
    h('span', { class: 'ticket-number', testid: 'ticket-number', text: `#${order.ticket_no}` }),
    h('div', { class: 'ticket-meta' },
      h('span', { class: 'ticket-table', testid: 'ticket-table', text: `Table ${order.table_label}` }),
      h('span', { class: ['ticket-status', `status-${status}`], testid: 'ticket-status', text: STATUS_LABEL[status] || status })),
    timerEl),
  h('ul', { class: 'ticket-items' }, items.map((item) =>
    h('li', { class: 'ticket-item', testid: 'ticket-item' },
      h('span', { class: 'ticket-qty', testid: 'ticket-item-qty', text: `${item.quantity}×` }),
      h('span', { class: 'ticket-item-text' },
        h('span', { class: 'ticket-item-name', testid: 'ticket-item-name', text: item.name }),
        Array.isArray(item.options) && item.options.length ? h('ul', { class: 'ticket-item-options' },
          item.options.map((o) => h('li', { testid: 'ticket-item-option', text: o.name }))) : null,
        item.note ? h('span', { class: 'ticket-item-note', testid: 'ticket-item-note', text: item.note }) : null)))),
  order.note ? h('p', { class: 'ticket-note', testid: 'ticket-note', text: order.note }) : null,
  allergyBanner(order),
  actions);
  return { el, timerEl, holdEl };
}

/** The banner no cook can miss: the table's declared allergies, and whether they were acknowledged. */
function allergyBanner(order) {
  const declared = Array.isArray(order.allergies) ? order.allergies : [];
  if (!declared.length) return null;
  const ack = order.allergy_ack;
  return h('div', { class: ['allergy-banner', ack && 'is-acknowledged'], testid: 'allergy-banner', role: 'alert' },
    h('strong', { text: `ALLERGIES: ${declared.map(allergenLabel).join(', ')}` }),
    ack ? h('span', { class: 'allergy-banner-ack', testid: 'allergy-banner-ack', text: ` · read ${formatDateTime(ack.at, { timeStyle: 'short' })}` }) : null);
}

/** Once a second: ticket ages, their colour, and hold countdowns. */
function updateTimers() {
  const { warn, late } = thresholds();
  for (const [id, entry] of ticketEls) {
    const order = state.tickets.get(id);
    if (!order) continue;
    const age = ageSeconds(order);
    entry.timerEl.textContent = formatDuration(age);
    const level = age >= late ? 'late' : age >= warn ? 'warn' : 'ok';
    entry.el.classList.toggle('is-warn', level === 'warn');
    entry.el.classList.toggle('is-late', level === 'late');
    entry.timerEl.dataset.level = level;
    const held = state.holds.get(id);
    if (held && entry.holdEl) {
      entry.holdEl.textContent = `${Math.max(0, Math.ceil((HOLD_MS - (Date.now() - held.startedAt)) / 1000))}s`;
    }
  }
}

function tick() {
  updateTimers();
}

function renderAllDay() {
  const counts = new Map();
  for (const order of state.tickets.values()) {
    if (FINAL.has(order.status)) continue;
    for (const item of order.items || []) {
      const key = item.menu_item_id !== undefined && item.menu_item_id !== null ? `id:${item.menu_item_id}` : `name:${item.name}`;
      const entry = counts.get(key) || { name: item.name, quantity: 0, options: new Map() };
      entry.quantity += Number(item.quantity) || 0;
      for (const o of Array.isArray(item.options) ? item.options : []) {
        entry.options.set(o.name, (entry.options.get(o.name) || 0) + (Number(item.quantity) || 0));
      }
      counts.set(key, entry);
    }
  }
  const rows = [...counts.values()].sort((a, b) => b.quantity - a.quantity || String(a.name).localeCompare(String(b.name)));
  setChildren(dom.allDayList, rows.length
    ? rows.map((row) => h('li', { class: 'all-day-item', testid: 'all-day-item' },
      h('span', { class: 'all-day-count', testid: 'all-day-count', text: String(row.quantity) }),
      h('span', { class: 'all-day-name' },
        h('span', { testid: 'all-day-name', text: row.name }),
        row.options.size ? h('span', { class: 'all-day-options', testid: 'all-day-options',
          text: [...row.options].map(([name, n]) => `${n} ${name}`).join(' · ') }) : null)))
    : h('li', { class: 'muted', text: state.inSync ? 'Nothing open.' : 'Not in sync yet.' }));
}

// ---------------------------------------------------------------------------
// Rendering: header and menu panel
// ---------------------------------------------------------------------------

function renderAll() {
  renderHeader();
  renderTickets();
  renderMenuPanel();
}

function renderHeader() {
  const r = state.restaurant;
  dom.kitchenRestaurantName.textContent = r ? r.name : 'Kitchen';
  document.title = r ? `Kitchen · ${r.name}` : 'Kitchen · Scan2Order';
  const accepting = !r || r.accepting_orders !== false;
  dom.acceptingState.textContent = accepting ? 'Taking orders' : 'Ordering paused';
  dom.acceptingState.className = `pill ${accepting ? 'pill-ok' : 'pill-danger'}`;
  dom.toggleAccepting.textContent = accepting ? 'Pause ordering' : 'Resume ordering';
  dom.toggleAccepting.classList.toggle('btn-danger', !accepting);
  dom.toggleAccepting.disabled = !r || state.acceptingBusy;
}

function findMenuItem(itemId) {
  for (const category of (state.menu && state.menu.categories) || []) {
    for (const item of category.items || []) if (String(item.id) === itemId) return item;
  }
  return null;
}

function findMenuOption(optionId) {
  for (const category of (state.menu && state.menu.categories) || []) {
    for (const item of category.items || []) {
      for (const group of item.option_groups || []) {
        for (const option of group.options || []) if (String(option.id) === optionId) return option;
      }
    }
  }
  return null;
}

function setOptionAvailable(optionId, available) {
  const option = findMenuOption(optionId);
  if (!option) return;
  option.available = available;
  renderMenuPanel();
}

function setItemAvailable(itemId, available) {
  const item = findMenuItem(itemId);
  if (!item) return;
  item.available = available;
  renderMenuPanel();
}

function renderMenuPanel() {
  const categories = (state.menu && state.menu.categories) || [];
  if (!categories.length) {
    setChildren(dom.menuPanelList, h('p', { class: 'muted', text: 'The menu is empty.' }));
    return;
  }
  setChildren(dom.menuPanelList, categories.map((category) =>
    h('section', { class: 'menu-panel-category' },
      h('h3', { class: 'menu-panel-category-title', text: category.name }),
      h('ul', { class: 'menu-toggle-list' }, (category.items || []).map((item) => {
        const id = String(item.id);
        const busy = state.menuBusy.has(id);
        return h('li', { class: ['menu-toggle-row', !item.available && 'is-sold-out'], testid: 'menu-panel-item', dataset: { itemId: id } },
          h('span', { class: 'menu-toggle-name' },
            h('span', { text: item.name }),
            item.price_cents !== undefined ? h('span', { class: 'muted small', text: money(item.price_cents) }) : null),
          h('button', {
            type: 'button', role: 'switch', 'aria-checked': String(!!item.available),
            'aria-label': `${item.name} available`,
            class: ['btn', 'btn-toggle', item.available ? 'is-on' : 'is-off'],
            testid: 'menu-item-toggle', dataset: { itemId: id }, disabled: busy,
            on: { click: () => toggleItem(id) },
          }, item.available ? 'Available' : 'Sold out'),
          optionToggles(item));
      })))));
}

/** Sold-out switches for a dish's options (oat milk, a side). */
function optionToggles(item) {
  const options = (item.option_groups || []).flatMap((g) => g.options || []);
  if (!options.length) return null;
  return h('ul', { class: 'option-toggle-list' }, options.map((option) => {
    const id = String(option.id);
    const busy = state.menuBusy.has(`option:${id}`);
    return h('li', { class: ['menu-toggle-row', 'is-option', !option.available && 'is-sold-out'], testid: 'menu-panel-option', dataset: { optionId: id } },
      h('span', { class: 'menu-toggle-name', text: option.name }),
      h('button', {
        type: 'button', role: 'switch', 'aria-checked': String(!!option.available),
        'aria-label': `${item.name}: ${option.name} available`,
        class: ['btn', 'btn-toggle', option.available ? 'is-on' : 'is-off'],
        testid: 'menu-option-toggle', disabled: busy,
        on: { click: () => toggleOption(id) },
      }, option.available ? 'Available' : 'Sold out'));
  }));
}

async function toggleOption(optionId) {
  const option = findMenuOption(optionId);
  const key = `option:${optionId}`;
  if (!option || state.menuBusy.has(key)) return;
  const wanted = !option.available;
  state.menuBusy.add(key);
  renderMenuPanel();
  try {
    const updated = await staff.request('PATCH', kitchenPath(`/api/v1/kitchen/options/${encodeURIComponent(optionId)}`), {
      body: { available: wanted }, retry: { attempts: 3 },
    });
    option.available = updated && typeof updated.available === 'boolean' ? updated.available : wanted;
    toast(`${option.name}: ${option.available ? 'available again' : 'sold out'}`, 'ok', 2500);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) toast(errorMessage(err), 'error');
  } finally {
    state.menuBusy.delete(key);
    renderMenuPanel();
  }
}

async function toggleItem(itemId) {
  const item = findMenuItem(itemId);
  if (!item || state.menuBusy.has(itemId)) return;
  const wanted = !item.available;
  state.menuBusy.add(itemId);
  renderMenuPanel();
  try {
    const updated = await staff.request('PATCH', kitchenPath(`/api/v1/kitchen/menu-items/${encodeURIComponent(itemId)}`), {
      body: { available: wanted }, retry: { attempts: 3 },
    });
    item.available = updated && typeof updated.available === 'boolean' ? updated.available : wanted;
    toast(`${item.name}: ${item.available ? 'back on the menu' : 'sold out'}`, 'ok', 2500);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) toast(errorMessage(err), 'error');
  } finally {
    state.menuBusy.delete(itemId);
    renderMenuPanel();
  }
}

async function toggleAccepting() {
  const r = state.restaurant;
  if (!r || state.acceptingBusy) return;
  const wanted = r.accepting_orders === false;
  state.acceptingBusy = true;
  renderHeader();
  try {
    const res = await staff.request('PATCH', kitchenPath('/api/v1/kitchen/restaurant'), {
      body: { accepting_orders: wanted }, retry: { attempts: 3 },
    });
    const value = res && typeof res.accepting_orders === 'boolean' ? res.accepting_orders
      : res && res.restaurant && typeof res.restaurant.accepting_orders === 'boolean' ? res.restaurant.accepting_orders : wanted;
    r.accepting_orders = value;
    toast(value ? 'Ordering resumed.' : 'Ordering paused: guests cannot order until you resume.', value ? 'ok' : 'warn');
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) toast(errorMessage(err), 'error');
  } finally {
    state.acceptingBusy = false;
    renderHeader();
  }
}

// ---------------------------------------------------------------------------
// Controls, sound, wake lock
// ---------------------------------------------------------------------------

function wireControls() {
  for (const button of document.querySelectorAll('[data-action="logout"]')) button.addEventListener('click', signOut);
  dom.pickerForm.addEventListener('submit', (event) => {
    event.preventDefault();
    if (dom.restaurantSelect.value) openBoard(dom.restaurantSelect.value);
  });
  dom.switchRestaurant.addEventListener('click', () => {
    resetBoard();
    showPicker(false);
  });
  dom.toggleAccepting.addEventListener('click', toggleAccepting);
  dom.toggleAllday.addEventListener('click', () => togglePanel(dom.toggleAllday, dom.allDayPanel));
  dom.toggleMenu.addEventListener('click', () => togglePanel(dom.toggleMenu, dom.menuPanel));
  dom.enableSound.addEventListener('click', toggleSound);

  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && !dom.boardView.hidden && !wakeLock) requestWakeLock();
  });
  window.addEventListener('beforeunload', (event) => {
    if (state.holds.size || state.inflight.size) {
      event.preventDefault();
      event.returnValue = '';
    }
  });
}

function togglePanel(button, panel) {
  const open = panel.hidden;
  show(panel, open);
  button.setAttribute('aria-pressed', String(open));
}

async function toggleSound() {
  if (beeper.enabled) {
    beeper.disable();
    dom.enableSound.textContent = 'Enable sound';
    dom.enableSound.setAttribute('aria-pressed', 'false');
    return;
  }
  try {
    await beeper.enable();
    beeper.lastBeep = 0;
    beeper.beep();
    dom.enableSound.textContent = 'Sound on';
    dom.enableSound.setAttribute('aria-pressed', 'true');
  } catch (err) {
    toast(errorMessage(err), 'error');
  }
  requestWakeLock();
}

async function requestWakeLock() {
  if (!('wakeLock' in navigator) || document.visibilityState !== 'visible' || wakeLock) return;
  try {
    wakeLock = await navigator.wakeLock.request('screen');
    wakeLock.addEventListener('release', () => { wakeLock = null; });
  } catch {
    wakeLock = null; // refused (battery saver, no permission): the display just may dim
  }
}

boot();
