// Scan2Order guest app, served at /t/{table_token}.
//
// Menu → cart (persisted per table) → phone verification (WhatsApp code, once
// per device) → idempotent order submit → live status over /ws/table/{token}.
// A dish's choices (the dish sheet), allergen badges and the table's declared
// allergies are in menu-choices.js.

import {
  h, byId, show, setChildren, preserveFocus, local, uuid, apiRequest, ApiError, errorMessage, safeUrl,
  withQuery, formatMoney, formatDateTime, LiveSocket, toast,
} from '/static/common.js';
import {
  allergenBadges, allergenLabel, chosenOptions, conflicts, groupsOf, openAllergySheet, openDishSheet,
  optionsProblem, unitPrice,
} from '/static/menu-choices.js';

const STATUS_LABELS = {
  placed: 'Received',
  accepted: 'Accepted',
  preparing: 'Being prepared',
  ready: 'Ready!',
  served: 'Served',
  cancelled: 'Cancelled',
};
const FINAL_STATUSES = new Set(['served', 'cancelled']);
const MAX_LINES = 50;
const MAX_QTY = 99;
const MAX_NOTE = 200;
const CUSTOMER_KEY = 's2o.customer';
const LAST_PHONE_KEY = 's2o.last_phone';
// A code sent and not yet used: {phone, expiresAt, resendAt}. Kept for the code's lifetime, so a guest who
// reloads can still type the code they have instead of being refused a new one.
const PENDING_CODE_KEY = 's2o.pending_code';

const tableToken = tokenFromPath(location.pathname);
const CART_KEY = `s2o.cart.${tableToken}`;
const PENDING_KEY = `s2o.pending.${tableToken}`;
const ALLERGIES_KEY = `s2o.allergies.${tableToken}`;

const state = {
  restaurant: null,
  table: null,
  menu: null,
  etag: null,
  items: new Map(), // item id → item (from the menu)
  accepting: true,
  cart: loadCart(),
  allergies: loadAllergies(), // allergen codes the table declared
  tableOrders: new Map(), // order id → order, the table's live orders
  myOrders: [], // the verified phone's orders, newest first
  myNextBefore: null,
  myOrdersState: 'idle', // idle | loading | loaded | error
  lastPlaced: null, // the order placed from this page, for the confirmation card
  placing: false,
  pendingRetry: false,
  retryAt: 0,
  checkoutMessage: null, // {text, kind}
  view: 'menu',
  started: false,
  snapshots: 0,
  invalid: false,
};

const dom = {};
let socket = null;
let loadRetryTimer = null;
let countdownTimer = null;

// ---------------------------------------------------------------------------
// Start-up
// ---------------------------------------------------------------------------

function tokenFromPath(pathname) {
  const m = /^\/t\/([^/]+)\/?$/.exec(pathname);
  if (!m) return null;
  try { return decodeURIComponent(m[1]); } catch { return null; }
}

function init() {
  for (const id of ['restaurant-name', 'table-label', 'connection-banner', 'closed-notice', 'load-notice',
    'invalid-table', 'guest-app', 'category-nav', 'menu', 'cart', 'cart-count', 'cart-bar', 'cart-bar-button',
    'order-confirmation-slot', 'table-orders', 'my-orders', 'verify-dialog', 'phone-form', 'code-form',
    'phone-input', 'code-input', 'code-sent-to', 'resend-code', 'change-phone', 'view-menu', 'view-cart', 'view-orders']) {
    dom[id.replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = byId(id);
  }
  for (const tab of document.querySelectorAll('.tab[data-view]')) {
    tab.addEventListener('click', () => setView(tab.dataset.view));
  }
  dom.cartBarButton.addEventListener('click', () => setView('cart'));
  wireVerification();

  if (!tableToken) {
    showInvalid();
    return;
  }
  loadTable();
}

/**
 * GET the table, its restaurant and menu. `conditional` sends If-None-Match
 * (used when a `menu` event says the version changed). Resolves true when the
 * table is valid.
 */
async function loadTable({ conditional = false } = {}) {
  clearTimeout(loadRetryTimer);
  const headers = {};
  if (conditional && state.etag) headers['If-None-Match'] = state.etag;
  try {
    const res = await apiRequest('GET', `/api/v1/tables/${encodeURIComponent(tableToken)}`, {
      headers,
      retry: { attempts: 4, onRetry: (err) => setLoadNotice(errorMessage(err)) },
    });
    setLoadNotice('');
    if (res.status !== 304 && res.data) {
      state.etag = res.headers.get('ETag');
      applyTable(res.data);
    }
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      showInvalid();
      return false;
    }
    setLoadNotice(err instanceof ApiError && (err.status === 503 || err.status === 0)
      ? 'The menu is temporarily unavailable, retrying…'
      : errorMessage(err));
    loadRetryTimer = setTimeout(() => loadTable(), 5000);
    return false;
  }
}

function applyTable(data) {
  state.restaurant = data.restaurant;
  state.table = data.table;
  state.menu = data.menu || { categories: [] };
  state.items = new Map();
  for (const category of state.menu.categories || []) {
    for (const item of category.items || []) {
      state.items.set(String(item.id), { ...item, id: String(item.id), category: category.name });
    }
  }
  state.accepting = data.restaurant.accepting_orders !== false;

  dom.restaurantName.textContent = data.restaurant.name;
  dom.tableLabel.textContent = `Table ${data.table.label}`;
  document.title = `${data.restaurant.name} · Table ${data.table.label}`;
  show(dom.closedNotice, !state.accepting);
  show(dom.guestApp, true);

  renderMenu();
  renderCart();
  renderOrders();

  if (!state.started) {
    state.started = true;
    startSocket();
    resumePendingOrder();
    if (currentCustomer()) loadMyOrders();
  }
}

function showInvalid() {
  state.invalid = true;
  if (socket) socket.stop();
  show(dom.guestApp, false);
  show(dom.cartBar, false);
  show(dom.connectionBanner, false);
  show(dom.closedNotice, false);
  setLoadNotice('');
  show(dom.invalidTable, true);
  dom.restaurantName.textContent = 'Scan2Order';
  dom.tableLabel.textContent = '';
}

function setLoadNotice(text) {
  dom.loadNotice.textContent = text;
  show(dom.loadNotice, !!text);
}

function setAccepting(accepting) {
  state.accepting = accepting;
  if (state.restaurant) state.restaurant.accepting_orders = accepting;
  show(dom.closedNotice, !accepting);
  renderCart();
}

// ---------------------------------------------------------------------------
// Money and views
// ---------------------------------------------------------------------------

function money(cents, currency) {
  return formatMoney(cents, currency || (state.restaurant && state.restaurant.currency) || 'EUR');
}

function setView(view) {
  state.view = view;
  for (const tab of document.querySelectorAll('.tab[data-view]')) {
    tab.setAttribute('aria-selected', String(tab.dataset.view === view));
  }
  show(dom.viewMenu, view === 'menu');
  show(dom.viewCart, view === 'cart');
  show(dom.viewOrders, view === 'orders');
  renderCartBar();
  window.scrollTo({ top: 0 });
}

// ---------------------------------------------------------------------------
// Menu
// ---------------------------------------------------------------------------

function renderMenu() {
  const categories = (state.menu && state.menu.categories) || [];
  setChildren(dom.categoryNav, categories.map((category, i) =>
    h('a', { class: 'chip', href: `#cat-${i}`, testid: 'category-link', text: category.name })));
  show(dom.categoryNav, categories.length > 1);

  if (!categories.some((c) => (c.items || []).length)) {
    setChildren(dom.menu, h('p', { class: 'empty-state', testid: 'menu-empty', text: 'There is nothing on the menu right now.' }));
    return;
  }
  setChildren(dom.menu, allergyBar(), categories.map((category, i) =>
    h('section', { class: 'menu-category', id: `cat-${i}`, testid: 'menu-category' },
      h('h2', { class: 'menu-category-title', text: category.name }),
      h('div', { class: 'menu-items' },
        (category.items || []).map((raw) => menuItemCard(state.items.get(String(raw.id))))))));
}

/** "I have allergies": what the table declared, and the button to change it. */
function allergyBar() {
  const declared = state.allergies;
  return h('div', { class: 'allergy-bar', testid: 'allergy-bar' },
    declared.length
      ? h('p', { class: 'small', testid: 'declared-allergies', text: `Allergies at this table: ${declared.map(allergenLabel).join(', ')}` })
      : h('p', { class: 'muted small', text: 'Allergies? Tell us and we mark the dishes to avoid.' }),
    h('button', {
      type: 'button', class: 'btn btn-secondary btn-small', testid: 'allergies-button',
      text: declared.length ? 'Change allergies' : 'I have allergies',
      on: { click: () => openAllergySheet({ declared, onSave: setAllergies }) },
    }));
}

function loadAllergies() {
  const saved = local.get(ALLERGIES_KEY);
  return Array.isArray(saved) ? saved.filter((a) => typeof a === 'string').slice(0, 14) : [];
}

function setAllergies(codes) {
  state.allergies = codes;
  local.set(ALLERGIES_KEY, codes);
  renderMenu();
  renderCart();
}

function menuItemCard(item) {
  const clash = conflicts(item, [], state.allergies);
  const soldOut = !item.available;
  const blocked = soldOut || clash.length > 0;
  const choices = groupsOf(item).length > 0;
  const inCart = quantityInCart(item.id);
  const tags = Array.isArray(item.tags) ? item.tags.filter((t) => typeof t === 'string' && t.trim()) : [];
  const photo = item.thumbnail_url ? safeUrl(item.thumbnail_url) : null;
  return h('article', { class: ['menu-item', soldOut && 'is-sold-out', photo && 'has-photo'], testid: 'menu-item', dataset: { itemId: item.id } },
    // Sized before it loads (width and height), so the menu does not jump; loaded only near the screen.
    photo ? h('img', { class: 'menu-item-photo', testid: 'menu-item-photo', src: photo, alt: '', width: 88, height: 88, loading: 'lazy', decoding: 'async' }) : null,
    h('div', { class: 'menu-item-body' },
      h('h3', { class: 'menu-item-name', testid: 'menu-item-name', text: item.name }),
      item.description ? h('p', { class: 'menu-item-desc', testid: 'menu-item-description', text: item.description }) : null,
      tags.length ? h('ul', { class: 'tags', 'aria-label': 'Dietary information' },
        tags.map((tag) => h('li', { class: 'tag', testid: 'item-tag', text: tag }))) : null,
      allergenBadges(item.allergens),
      clash.length ? h('p', { class: 'line-warning', testid: 'allergen-warning', text: `Contains ${clash.map(allergenLabel).join(', ')}, which you declared.` }) : null),
    h('div', { class: 'menu-item-side' },
      h('span', { class: 'price', testid: 'menu-item-price', text: money(item.price_cents) }),
      soldOut ? h('span', { class: 'badge badge-soldout', testid: 'sold-out-badge', text: 'Sold out' }) : null,
      h('button', {
        type: 'button',
        class: 'btn btn-primary btn-add',
        testid: 'add-to-cart',
        disabled: blocked,
        'aria-label': soldOut ? `${item.name} is sold out` : clash.length ? `${item.name} contains an allergen you declared` : `Add ${item.name} to cart`,
        dataset: { focusKey: `add-${item.id}` },
        on: { click: () => (choices ? chooseOptions(item) : addToCart(item.id, [])) },
      }, choices ? 'Choose' : 'Add'),
      inCart > 0 ? h('span', { class: 'in-cart', testid: 'item-in-cart', text: `${inCart} in cart` }) : null));
}

/** Re-render one item card in place (availability or cart count changed). */
function updateMenuItem(itemId) {
  const item = state.items.get(String(itemId));
  if (!item) return;
  const old = [...dom.menu.querySelectorAll('[data-testid="menu-item"]')].find((el) => el.dataset.itemId === item.id);
  if (!old) return;
  preserveFocus(old.parentElement, () => old.replaceWith(menuItemCard(item)));
}

function chooseOptions(item) {
  if (!item.available || state.placing) return;
  openDishSheet({ item, money, declared: state.allergies, onAdd: (optionIds) => addToCart(item.id, optionIds) });
}

function setOptionAvailable(optionId, available) {
  for (const item of state.items.values()) {
    for (const group of groupsOf(item)) {
      for (const option of group.options || []) {
        if (String(option.id) === String(optionId) && option.available !== available) {
          option.available = available;
          updateMenuItem(item.id);
        }
      }
    }
  }
  renderCart();
}

function setItemAvailable(itemId, available) {
  const item = state.items.get(String(itemId));
  if (!item || item.available === available) return;
  item.available = available;
  updateMenuItem(item.id);
  renderCart();
}

// ---------------------------------------------------------------------------
// Cart
// ---------------------------------------------------------------------------

function emptyCart() {
  return { lines: [], note: '' };
}

function loadCart() {
  const saved = local.get(CART_KEY);
  if (!saved || !Array.isArray(saved.lines)) return emptyCart();
  const lines = saved.lines
    .filter((l) => l && l.item_id !== undefined)
    .slice(0, MAX_LINES)
    .map((l) => ({
      key: typeof l.key === 'string' ? l.key : uuid(),
      item_id: String(l.item_id),
      quantity: clampQty(l.quantity),
      note: typeof l.note === 'string' ? l.note.slice(0, MAX_NOTE) : '',
      options: Array.isArray(l.options) ? l.options.map(String).slice(0, 30) : [],
    }));
  return { lines, note: typeof saved.note === 'string' ? saved.note.slice(0, MAX_NOTE) : '' };
}

function saveCart() {
  local.set(CART_KEY, state.cart);
}

function clampQty(n) {
  const q = Math.round(Number(n));
  return Number.isFinite(q) ? Math.min(MAX_QTY, Math.max(1, q)) : 1;
}

function quantityInCart(itemId) {
  return state.cart.lines.reduce((sum, l) => (l.item_id === String(itemId) ? sum + l.quantity : sum), 0);
}

/** 'ok' | 'soldout' | 'missing' | 'changed' | 'allergen' for a cart line. */
function lineState(line) {
  const item = state.items.get(line.item_id);
  if (!item) return 'missing';
  if (!item.available) return 'soldout';
  const problem = optionsProblem(item, line.options);
  if (problem === 'missing') return 'changed';
  if (problem === 'soldout') return 'soldout';
  return conflicts(item, line.options, state.allergies).length ? 'allergen' : 'ok';
}

const LINE_WARNINGS = {
  soldout: 'Sold out. Remove it to order.',
  missing: 'No longer on the menu. Remove it to order.',
  changed: 'Its choices changed on the menu. Remove it and add it again.',
  allergen: 'Contains an allergen you declared. Remove it to order.',
};

function cartTotal() {
  return state.cart.lines.reduce((sum, line) => {
    const item = state.items.get(line.item_id);
    return item && lineState(line) === 'ok' ? sum + unitPrice(item, line.options) * line.quantity : sum;
  }, 0);
}

function cartCount() {
  return state.cart.lines.reduce((sum, l) => sum + l.quantity, 0);
}

function cartChanged(itemIds = []) {
  saveCart();
  if (!state.placing) state.pendingRetry = false;
  renderCart();
  for (const id of itemIds) updateMenuItem(id);
}

function addToCart(itemId, optionIds) {
  const item = state.items.get(String(itemId));
  if (!item || !item.available || state.placing) return;
  const options = chosenOptions(item, optionIds).map((c) => String(c.option.id));
  const same = (l) => l.item_id === item.id && !l.note && (l.options || []).join() === options.join();
  const line = [...state.cart.lines].reverse().find(same);
  if (line) {
    if (line.quantity >= MAX_QTY) {
      toast(`You can order at most ${MAX_QTY} of one dish per line.`, 'warn');
      return;
    }
    line.quantity += 1;
  } else {
    if (state.cart.lines.length >= MAX_LINES) {
      toast(`An order can have at most ${MAX_LINES} lines.`, 'warn');
      return;
    }
    state.cart.lines.push({ key: uuid(), item_id: item.id, quantity: 1, note: '', options });
  }
  cartChanged([item.id]);
  toast(`Added ${item.name}`, 'ok', 1800);
}

function setLineQuantity(key, quantity) {
  const line = state.cart.lines.find((l) => l.key === key);
  if (!line) return;
  line.quantity = clampQty(quantity);
  cartChanged([line.item_id]);
}

function removeLine(key) {
  const line = state.cart.lines.find((l) => l.key === key);
  state.cart.lines = state.cart.lines.filter((l) => l.key !== key);
  cartChanged(line ? [line.item_id] : []);
}

function cartProblem() {
  if (!state.cart.lines.length) return 'Your cart is empty.';
  if (!state.accepting) return 'The restaurant is not taking orders right now.';
  if (state.cart.lines.some((l) => lineState(l) === 'allergen')) return 'Remove the dishes with your allergens from your cart first.';
  if (state.cart.lines.some((l) => lineState(l) !== 'ok')) return 'Remove the sold-out dishes from your cart first.';
  if (state.cart.lines.length > MAX_LINES) return `An order can have at most ${MAX_LINES} lines.`;
  return null;
}

function renderCart() {
  preserveFocus(dom.cart, buildCart);
  renderCartBar();
}

function buildCart() {
  const lines = state.cart.lines;
  if (!lines.length) {
    setChildren(dom.cart,
      h('div', { class: 'empty-state', testid: 'cart-empty' },
        h('p', { text: 'Your cart is empty.' }),
        h('button', { type: 'button', class: 'btn btn-secondary', text: 'Browse the menu', on: { click: () => setView('menu') } })),
      checkoutMessageEl());
    return;
  }
  const locked = state.placing;
  const customer = currentCustomer();
  const retryWait = Math.ceil((state.retryAt - Date.now()) / 1000);
  const problem = cartProblem();
  let label = `Place order · ${money(cartTotal())}`;
  if (state.placing) label = 'Sending your order…';
  else if (retryWait > 0) label = `Try again in ${retryWait}s`;
  else if (state.pendingRetry) label = `Try again · ${money(cartTotal())}`;

  setChildren(dom.cart,
    h('ul', { class: 'cart-lines' }, lines.map((line) => cartLine(line, locked))),
    h('label', { class: 'field' },
      h('span', { class: 'field-label', text: 'Note for the whole order (optional)' }),
      h('textarea', {
        class: 'input', rows: 2, maxlength: MAX_NOTE, testid: 'order-note', disabled: locked,
        value: state.cart.note, placeholder: 'e.g. we are in a hurry',
        dataset: { focusKey: 'order-note' },
        on: { input: (e) => { state.cart.note = e.target.value.slice(0, MAX_NOTE); saveCart(); } },
      })),
    h('div', { class: 'cart-summary' },
      h('span', { text: 'Total' }),
      h('strong', { testid: 'cart-total', text: money(cartTotal()) })),
    customer ? h('p', { class: 'muted small', testid: 'customer-phone' },
      `Ordering as ${customer.phone} · `,
      h('button', { type: 'button', class: 'btn-link', testid: 'forget-phone', text: 'not you?', on: { click: forgetCustomer } })) : null,
    checkoutMessageEl(),
    h('button', {
      type: 'button',
      class: 'btn btn-primary btn-block btn-lg',
      testid: 'checkout-button',
      disabled: locked || retryWait > 0 || !!problem,
      'aria-busy': String(locked),
      dataset: { focusKey: 'checkout' },
      on: { click: checkout },
    }, label),
    problem && !state.checkoutMessage ? h('p', { class: 'muted small center', testid: 'checkout-hint', text: problem }) : null);
}

function cartLine(line, locked) {
  const item = state.items.get(line.item_id);
  const status = lineState(line);
  const name = item ? item.name : 'Dish no longer on the menu';
  const unit = item ? unitPrice(item, line.options) : 0;
  const chosen = item ? chosenOptions(item, line.options) : [];
  return h('li', { class: ['cart-line', status !== 'ok' && 'is-unavailable'], testid: 'cart-line', dataset: { itemId: line.item_id } },
    h('div', { class: 'cart-line-head' },
      h('div', {},
        h('div', { class: 'cart-line-name', testid: 'cart-line-name', text: name }),
        chosen.length ? h('div', { class: 'line-options', testid: 'cart-line-options', text: chosen.map((c) => c.option.name).join(', ') }) : null,
        item ? h('div', { class: 'muted small', text: `${money(unit)} each` }) : null),
      h('strong', { class: 'cart-line-total', testid: 'line-total', text: item ? money(unit * line.quantity) : '—' })),
    status !== 'ok' ? h('p', { class: 'line-warning', testid: 'line-unavailable', role: 'status', text: LINE_WARNINGS[status] }) : null,
    h('div', { class: 'cart-line-controls' },
      h('div', { class: 'stepper', role: 'group', 'aria-label': `Quantity of ${name}` },
        h('button', {
          type: 'button', class: 'stepper-btn', testid: 'qty-decrease', 'aria-label': `One fewer ${name}`,
          disabled: locked || line.quantity <= 1, dataset: { focusKey: `dec-${line.key}` },
          on: { click: () => setLineQuantity(line.key, line.quantity - 1) },
        }, '−'),
        h('input', {
          class: 'stepper-input', type: 'number', min: 1, max: MAX_QTY, inputmode: 'numeric', testid: 'qty-input',
          value: String(line.quantity), disabled: locked, 'aria-label': `Quantity of ${name}`,
          dataset: { focusKey: `qty-${line.key}` },
          on: { change: (e) => setLineQuantity(line.key, e.target.value) },
        }),
        h('button', {
          type: 'button', class: 'stepper-btn', testid: 'qty-increase', 'aria-label': `One more ${name}`,
          disabled: locked || line.quantity >= MAX_QTY, dataset: { focusKey: `inc-${line.key}` },
          on: { click: () => setLineQuantity(line.key, line.quantity + 1) },
        }, '+')),
      h('button', {
        type: 'button', class: 'btn btn-ghost btn-small', testid: 'remove-line', disabled: locked,
        'aria-label': `Remove ${name}`, on: { click: () => removeLine(line.key) },
      }, 'Remove')),
    h('input', {
      class: 'input input-small', type: 'text', maxlength: MAX_NOTE, testid: 'line-note', disabled: locked,
      value: line.note, placeholder: 'Note for the kitchen (optional)', 'aria-label': `Note for ${name}`,
      dataset: { focusKey: `note-${line.key}` },
      on: { input: (e) => { line.note = e.target.value.slice(0, MAX_NOTE); saveCart(); } },
    }));
}

function checkoutMessageEl() {
  const msg = state.checkoutMessage;
  if (!msg || !msg.text) return null;
  return h('p', { class: ['form-message', `form-message-${msg.kind}`], testid: 'checkout-message', role: msg.kind === 'error' ? 'alert' : 'status', text: msg.text });
}

function setCheckoutMessage(text, kind = 'info') {
  state.checkoutMessage = text ? { text, kind } : null;
  renderCart();
}

function renderCartBar() {
  const count = cartCount();
  dom.cartCount.textContent = String(count);
  show(dom.cartCount, count > 0);
  dom.cartBarButton.textContent = `View cart · ${count} ${count === 1 ? 'item' : 'items'} · ${money(cartTotal())}`;
  show(dom.cartBar, count > 0 && state.view === 'menu' && !state.invalid);
}

// ---------------------------------------------------------------------------
// Checkout
// ---------------------------------------------------------------------------

function currentCustomer() {
  const c = local.get(CUSTOMER_KEY);
  if (!c || typeof c.customer_token !== 'string' || !c.customer_token) return null;
  if (c.expires_at && Date.parse(c.expires_at) <= Date.now()) {
    local.remove(CUSTOMER_KEY);
    return null;
  }
  return c;
}

function forgetCustomer() {
  local.remove(CUSTOMER_KEY);
  state.myOrders = [];
  state.myNextBefore = null;
  state.myOrdersState = 'idle';
  renderCart();
  renderOrders();
}

function buildPayload() {
  const payload = {
    table_token: tableToken,
    items: state.cart.lines.map((l) => {
      const line = { menu_item_id: l.item_id, quantity: l.quantity };
      const note = l.note.trim();
      if (note) line.note = note;
      if (l.options && l.options.length) line.options = l.options;
      return line;
    }),
  };
  if (state.allergies.length) payload.allergies = state.allergies;
  const note = state.cart.note.trim();
  if (note) payload.note = note;
  return payload;
}

async function checkout() {
  if (state.placing) return;
  const problem = cartProblem();
  if (problem) {
    setCheckoutMessage(problem, 'error');
    return;
  }
  let customer = currentCustomer();
  if (!customer) {
    customer = await askForVerification();
    if (!customer || state.placing) return;
  }
  const payload = buildPayload();
  let pending = local.get(PENDING_KEY);
  // One key per checkout attempt: a retry or double tap of the same cart reuses it.
  if (!pending || JSON.stringify(pending.payload) !== JSON.stringify(payload)) {
    pending = { key: uuid(), payload, created_at: new Date().toISOString() };
    local.set(PENDING_KEY, pending);
  }
  await submitPending(pending);
}

/** A submit that never got a definitive answer (page closed, network lost): finish it. */
function resumePendingOrder() {
  const pending = local.get(PENDING_KEY);
  if (!pending || typeof pending.key !== 'string' || !pending.payload) return;
  if (!currentCustomer()) {
    local.remove(PENDING_KEY);
    return;
  }
  setView('cart');
  setCheckoutMessage('Finishing your previous order…', 'info');
  submitPending(pending);
}

async function submitPending(pending) {
  const customer = currentCustomer();
  if (!customer) return;
  state.placing = true;
  state.checkoutMessage = null;
  renderCart();

  let order = null;
  let error = null;
  try {
    const res = await apiRequest('POST', '/api/v1/orders', {
      body: pending.payload,
      token: customer.customer_token,
      headers: { 'Idempotency-Key': pending.key },
      // Safe to retry: the idempotency key makes the server return the first order.
      retry: { attempts: 4, onRetry: () => { state.checkoutMessage = { text: 'The service is temporarily unavailable, retrying…', kind: 'warn' }; renderCart(); } },
    });
    order = res.data;
  } catch (err) {
    error = err;
  }
  state.placing = false;

  if (order) {
    local.remove(PENDING_KEY);
    state.pendingRetry = false;
    orderPlaced(order);
    return;
  }

  const status = error instanceof ApiError ? error.status : 0;
  if (status === 0 || status === 429 || status === 503) {
    // Not a definitive answer: keep the key so the next try cannot create a second order.
    state.pendingRetry = true;
    if (status === 429) startRetryCountdown(error.retryAfter ?? 5);
    const reason = status === 429 ? errorMessage(error) : status === 503
      ? 'The service is temporarily unavailable.' : "We couldn't reach the restaurant.";
    setCheckoutMessage(`${reason} Your order is not confirmed yet; trying again will not send it twice.`, 'warn');
    return;
  }

  local.remove(PENDING_KEY);
  state.pendingRetry = false;
  if (status === 401) {
    local.remove(CUSTOMER_KEY);
    setCheckoutMessage('Please confirm your phone number again.', 'warn');
    const again = await askForVerification();
    if (again) await checkout();
    return;
  }
  if (error.code === 'item_unavailable') {
    const ids = Array.isArray(error.body.item_ids) ? error.body.item_ids.map(String) : [];
    for (const id of ids) setItemAvailable(id, false);
    const optionIds = Array.isArray(error.body.option_ids) ? error.body.option_ids.map(String) : [];
    for (const id of optionIds) setOptionAvailable(id, false);
    if (!ids.length && optionIds.length) {
      setCheckoutMessage('Sorry, a choice on one of your dishes just sold out. Remove that dish and add it again.', 'error');
      return;
    }
    const names = ids.map((id) => state.items.get(id)).filter(Boolean).map((i) => i.name);
    setCheckoutMessage(names.length
      ? `Sorry, ${names.join(', ')} just sold out. Remove ${names.length === 1 ? 'it' : 'them'} and try again.`
      : errorMessage(error), 'error');
    return;
  }
  if (error.code === 'allergen_conflict') {
    const names = (Array.isArray(error.body.item_ids) ? error.body.item_ids.map(String) : [])
      .map((id) => state.items.get(id)).filter(Boolean).map((i) => i.name);
    setCheckoutMessage(names.length ? `${names.join(', ')} contains an allergen you declared. Remove it to order.` : errorMessage(error), 'error');
    return;
  }
  if (error.code === 'invalid_options') {
    loadTable();
    setCheckoutMessage('The choices on one of your dishes changed. Remove it and add it again.', 'error');
    return;
  }
  if (error.code === 'not_accepting_orders') setAccepting(false);
  setCheckoutMessage(errorMessage(error), 'error');
}

function startRetryCountdown(seconds) {
  state.retryAt = Date.now() + Math.max(1, seconds) * 1000;
  clearInterval(countdownTimer);
  countdownTimer = setInterval(() => {
    if (Date.now() >= state.retryAt) {
      clearInterval(countdownTimer);
      state.retryAt = 0;
    }
    renderCart();
  }, 1000);
}

function orderPlaced(order) {
  state.lastPlaced = order;
  upsertTableOrder(order);
  upsertMyOrder(order);
  const itemIds = state.cart.lines.map((l) => l.item_id);
  state.cart = emptyCart();
  state.checkoutMessage = null;
  cartChanged(itemIds);
  renderOrders();
  setView('orders');
  const title = document.querySelector('[data-testid="order-confirmation-title"]');
  if (title) title.focus();
}

// ---------------------------------------------------------------------------
// Phone verification
// ---------------------------------------------------------------------------

const verify = { resolve: null, result: null, phone: '', resendAt: 0, timer: null };

function normalisePhone(text) {
  const s = String(text || '').trim().replace(/[\s\-().]/g, '');
  const withPlus = s.startsWith('00') ? `+${s.slice(2)}` : s;
  return /^\+\d{8,15}$/.test(withPlus) ? withPlus : null;
}

function askForVerification() {
  if (verify.resolve) return Promise.resolve(null);
  return new Promise((resolve) => {
    verify.resolve = resolve;
    verify.result = null;
    const pending = pendingCode();
    if (pending) {
      verify.phone = pending.phone;
      verify.resendAt = pending.resendAt;
      dom.verifyDialog.showModal();
      showCodeStep();
    } else {
      showPhoneStep();
      dom.verifyDialog.showModal();
      dom.phoneInput.focus();
    }
  });
}

/** The code sent earlier (this page or one before a reload) that can still be used, if any. */
function pendingCode() {
  const p = local.get(PENDING_CODE_KEY, null);
  if (!p || typeof p.phone !== 'string' || !(Number(p.expiresAt) > Date.now())) {
    if (p) local.remove(PENDING_CODE_KEY);
    return null;
  }
  return { phone: p.phone, resendAt: Number(p.resendAt) || 0 };
}

function showPhoneStep() {
  show(dom.phoneForm, true);
  show(dom.codeForm, false);
  if (!dom.phoneInput.value) dom.phoneInput.value = local.get(LAST_PHONE_KEY, '') || '';
  formError(dom.phoneForm, 'verify-error', '');
}

function showCodeStep() {
  show(dom.phoneForm, false);
  show(dom.codeForm, true);
  dom.codeSentTo.textContent = `We sent a code to ${verify.phone} on WhatsApp. Enter it here.`;
  dom.codeInput.value = '';
  formError(dom.codeForm, 'code-error', '');
  updateResendButton();
  clearInterval(verify.timer);
  verify.timer = setInterval(updateResendButton, 1000);
  dom.codeInput.focus();
}

function updateResendButton() {
  const wait = Math.ceil((verify.resendAt - Date.now()) / 1000);
  dom.resendCode.disabled = wait > 0;
  dom.resendCode.textContent = wait > 0 ? `Send a new code (${wait}s)` : 'Send a new code';
}

function formError(form, testid, text) {
  const el = form.querySelector(`[data-testid="${testid}"]`);
  el.textContent = text;
}

async function sendCode(phone, form, errorTestid) {
  const submit = form.querySelector('[type="submit"]');
  submit.disabled = true;
  dom.resendCode.disabled = true;
  try {
    const res = await apiRequest('POST', '/api/v1/otp/send', { body: { phone } });
    const data = res.data || {};
    verify.phone = phone;
    verify.resendAt = Date.now() + (Number(data.resend_after_s) || 30) * 1000;
    local.set(LAST_PHONE_KEY, phone);
    local.set(PENDING_CODE_KEY, {
      phone,
      expiresAt: Date.now() + (Number(data.expires_in_s) || 300) * 1000,
      resendAt: verify.resendAt,
    });
    showCodeStep();
  } catch (err) {
    formError(form, errorTestid, errorMessage(err));
  } finally {
    submit.disabled = false;
    if (dom.codeForm.hidden === false) updateResendButton();
  }
}

function wireVerification() {
  dom.phoneForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const phone = normalisePhone(dom.phoneInput.value);
    if (!phone) {
      formError(dom.phoneForm, 'verify-error',
        'Enter your number in international format: + then the country code, e.g. +44 7700 900123.');
      dom.phoneInput.focus();
      return;
    }
    sendCode(phone, dom.phoneForm, 'verify-error');
  });

  dom.codeForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const code = dom.codeInput.value.replace(/\D/g, '');
    if (code.length < 4) {
      formError(dom.codeForm, 'code-error', 'Enter the code from the WhatsApp message.');
      return;
    }
    const submit = dom.codeForm.querySelector('[type="submit"]');
    submit.disabled = true;
    formError(dom.codeForm, 'code-error', '');
    try {
      const res = await apiRequest('POST', '/api/v1/otp/verify', { body: { phone: verify.phone, code } });
      const data = res.data;
      local.set(CUSTOMER_KEY, { customer_token: data.customer_token, phone: data.phone || verify.phone, expires_at: data.expires_at });
      local.remove(PENDING_CODE_KEY);
      verify.result = currentCustomer();
      dom.verifyDialog.close();
      renderCart();
      loadMyOrders();
    } catch (err) {
      formError(dom.codeForm, 'code-error', errorMessage(err));
      if (err instanceof ApiError && (err.code === 'code_expired' || err.code === 'too_many_attempts')) {
        local.remove(PENDING_CODE_KEY);
        verify.resendAt = 0;
        updateResendButton();
      }
      dom.codeInput.select();
    } finally {
      submit.disabled = false;
    }
  });

  dom.resendCode.addEventListener('click', () => sendCode(verify.phone, dom.codeForm, 'code-error'));
  dom.changePhone.addEventListener('click', () => {
    clearInterval(verify.timer);
    local.remove(PENDING_CODE_KEY);
    showPhoneStep();
    dom.phoneInput.focus();
  });
  for (const button of dom.verifyDialog.querySelectorAll('[data-action="close-verify"]')) {
    button.addEventListener('click', () => dom.verifyDialog.close());
  }
  dom.verifyDialog.addEventListener('close', () => {
    clearInterval(verify.timer);
    const resolve = verify.resolve;
    verify.resolve = null;
    if (resolve) resolve(verify.result);
  });
}

// ---------------------------------------------------------------------------
// Orders: this table's live orders and the verified phone's history
// ---------------------------------------------------------------------------

function upsertTableOrder(order) {
  if (!order || order.id === undefined) return;
  if (state.table && order.table_id !== undefined && String(order.table_id) !== String(state.table.id)) return;
  state.tableOrders.set(String(order.id), order);
}

function upsertMyOrder(order) {
  const i = state.myOrders.findIndex((o) => String(o.id) === String(order.id));
  if (i >= 0) state.myOrders[i] = order;
  else state.myOrders.unshift(order);
}

function isMine(orderId) {
  const id = String(orderId);
  return (state.lastPlaced && String(state.lastPlaced.id) === id) || state.myOrders.some((o) => String(o.id) === id);
}

function applyStatus(orderId, status, updatedAt, allergyAck) {
  const id = String(orderId);
  const patch = (o) => {
    if (o && String(o.id) === id) {
      o.status = status;
      if (updatedAt) o.updated_at = updatedAt;
      if (allergyAck) o.allergy_ack = allergyAck;
    }
  };
  patch(state.tableOrders.get(id));
  state.myOrders.forEach(patch);
  patch(state.lastPlaced);
}

async function loadMyOrders({ more = false } = {}) {
  const customer = currentCustomer();
  if (!customer) return;
  state.myOrdersState = 'loading';
  renderOrders();
  try {
    const res = await apiRequest('GET', withQuery('/api/v1/me/orders', { limit: 20, before: more ? state.myNextBefore : null }), {
      token: customer.customer_token,
      retry: { attempts: 3 },
    });
    const orders = (res.data && res.data.orders) || [];
    if (more) {
      for (const o of orders) if (!state.myOrders.some((m) => String(m.id) === String(o.id))) state.myOrders.push(o);
    } else {
      state.myOrders = orders;
    }
    state.myNextBefore = (res.data && res.data.next_before) || null;
    state.myOrdersState = 'loaded';
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      forgetCustomer();
      return;
    }
    state.myOrdersState = 'error';
    toast(errorMessage(err), 'error');
  }
  renderOrders();
}

/** Refresh one of my orders by id (e.g. it left the live list while we were away). */
async function refreshOrder(orderId) {
  const customer = currentCustomer();
  if (!customer) return;
  try {
    const res = await apiRequest('GET', `/api/v1/orders/${encodeURIComponent(orderId)}`, { token: customer.customer_token });
    if (res.data) {
      applyStatus(res.data.id, res.data.status, res.data.updated_at, res.data.allergy_ack);
      renderOrders();
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) forgetCustomer();
  }
}

function statusPill(status, testid = 'order-status') {
  return h('span', { class: ['status', `status-${status}`], testid, text: STATUS_LABELS[status] || status });
}

function orderCard(order) {
  const items = Array.isArray(order.items) ? order.items : [];
  return h('article', { class: ['order-card', isMine(order.id) && 'is-mine'], testid: 'order-card', dataset: { orderId: order.id, status: order.status } },
    h('div', { class: 'order-card-head' },
      h('span', { class: 'order-ticket', testid: 'order-ticket', text: `Ticket ${order.ticket_no}` }),
      statusPill(order.status)),
    h('p', { class: 'muted small' },
      [order.table_label ? `Table ${order.table_label}` : null, formatDateTime(order.created_at)].filter(Boolean).join(' · ')),
    h('ul', { class: 'order-items' }, items.map((it) =>
      h('li', {},
        h('span', { class: 'qty', text: `${it.quantity} ×` }), ' ',
        h('span', { text: it.name }),
        Array.isArray(it.options) && it.options.length ? h('span', { class: 'line-options', testid: 'order-line-options', text: it.options.map((o) => o.name).join(', ') }) : null,
        it.note ? h('span', { class: 'item-note', text: it.note }) : null))),
    order.note ? h('p', { class: 'order-note', text: `Note: ${order.note}` }) : null,
    allergyLine(order),
    order.total_cents !== undefined ? h('p', { class: 'order-total' }, 'Total ', h('strong', { text: money(order.total_cents, order.currency) })) : null);
}

/** The table's declared allergies on an order, and whether the kitchen has read them. */
function allergyLine(order) {
  const declared = Array.isArray(order.allergies) ? order.allergies : [];
  if (!declared.length) return null;
  const ack = order.allergy_ack;
  return h('p', { class: ['order-allergies', ack && 'is-acknowledged'], testid: 'order-allergies' },
    `Allergies: ${declared.map(allergenLabel).join(', ')} — `,
    h('span', { testid: 'allergy-ack', text: ack ? `read by the kitchen at ${formatDateTime(ack.at, { timeStyle: 'short' })}` : 'waiting for the kitchen to read them' }));
}

function renderOrders() {
  const last = state.lastPlaced;
  setChildren(dom.orderConfirmationSlot, last ? h('section', { class: 'confirmation', testid: 'order-confirmation', 'aria-live': 'polite' },
    h('h2', { class: 'confirmation-title', testid: 'order-confirmation-title', tabindex: -1, text: `Kitchen received your order — ticket ${last.ticket_no}` }),
    h('p', {}, 'Status: ', statusPill(last.status, 'order-confirmation-status')),
    h('p', { class: 'muted small', text: 'This page updates by itself. We also message you on WhatsApp when it is ready.' })) : null);

  const tableOrders = [...state.tableOrders.values()].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  setChildren(dom.tableOrders, tableOrders.length
    ? tableOrders.map(orderCard)
    : h('p', { class: 'muted', testid: 'table-orders-empty', text: 'No open orders at this table.' }));

  const customer = currentCustomer();
  if (!customer) {
    setChildren(dom.myOrders,
      h('p', { class: 'muted', text: 'Confirm your phone to see your orders here.' }),
      h('button', {
        type: 'button', class: 'btn btn-secondary', testid: 'verify-phone-button', text: 'Confirm my phone',
        on: { click: async () => { if (await askForVerification()) loadMyOrders(); } },
      }));
    return;
  }
  setChildren(dom.myOrders,
    h('div', { class: 'row-wrap' },
      h('span', { class: 'muted small', text: `Orders for ${customer.phone}` }),
      h('button', { type: 'button', class: 'btn btn-ghost btn-small', testid: 'refresh-my-orders', text: 'Refresh', on: { click: () => loadMyOrders() } }),
      h('button', { type: 'button', class: 'btn btn-ghost btn-small', testid: 'forget-phone', text: 'Forget this phone', on: { click: forgetCustomer } })),
    state.myOrdersState === 'loading' && !state.myOrders.length ? h('p', { class: 'muted', text: 'Loading…' }) : null,
    state.myOrdersState === 'loaded' && !state.myOrders.length ? h('p', { class: 'muted', testid: 'my-orders-empty', text: 'No orders yet.' }) : null,
    state.myOrders.map(orderCard),
    state.myNextBefore ? h('button', { type: 'button', class: 'btn btn-secondary', testid: 'my-orders-more', text: 'Show older orders', on: { click: () => loadMyOrders({ more: true }) } }) : null);
}

// ---------------------------------------------------------------------------
// Live socket
// ---------------------------------------------------------------------------

function startSocket() {
  socket = new LiveSocket({
    path: `/ws/table/${encodeURIComponent(tableToken)}`,
    onMessage: handleMessage,
    onStatus: (status) => show(dom.connectionBanner, status === 'reconnecting' && !state.invalid),
    onClose: (code) => {
      if (code !== 1008) return true;
      // Policy close: most likely the table's token was rotated. Check before retrying.
      setTimeout(async () => {
        if (await loadTable()) socket.start();
      }, 2000);
      return false;
    },
  });
  socket.start();
}

function handleMessage(msg) {
  switch (msg.type) {
    case 'snapshot': {
      state.tableOrders = new Map();
      for (const order of msg.orders || []) upsertTableOrder(order);
      for (const order of state.tableOrders.values()) applyStatus(order.id, order.status, order.updated_at, order.allergy_ack);
      // Availability and pause events are not in the snapshot: any that happened between loading the
      // menu and this subscription (the first one, or a reconnect) were missed, so check the menu
      // again. Its ETag follows every availability change, so the first check is a 304 when nothing
      // happened; after a reconnect everything is fetched.
      loadTable({ conditional: state.snapshots === 0 });
      state.snapshots += 1;
      const last = state.lastPlaced;
      if (last && !FINAL_STATUSES.has(last.status) && !state.tableOrders.has(String(last.id))) refreshOrder(last.id);
      renderOrders();
      break;
    }
    case 'order_created':
      upsertTableOrder(msg.order);
      renderOrders();
      break;
    case 'order_status': {
      const mine = isMine(msg.order_id);
      applyStatus(msg.order_id, msg.status, msg.updated_at, msg.allergy_ack);
      renderOrders();
      if (mine && msg.status === 'ready') {
        toast(`Your order (ticket ${msg.ticket_no}) is ready!`, 'ok', 10000);
        if (navigator.vibrate) navigator.vibrate([200, 100, 200]);
      } else if (mine && msg.status === 'cancelled') {
        toast(`Your order (ticket ${msg.ticket_no}) was cancelled by the restaurant.`, 'warn', 10000);
      }
      break;
    }
    case 'menu_item':
      setItemAvailable(msg.item_id, msg.available !== false);
      break;
    case 'menu_option':
      setOptionAvailable(msg.option_id, msg.available !== false);
      break;
    case 'restaurant':
      setAccepting(msg.accepting_orders !== false);
      break;
    case 'menu':
      if (!state.menu || String(msg.version) !== String(state.menu.version)) loadTable({ conditional: true });
      break;
    case 'error':
      if (msg.message) toast(msg.message, 'error');
      break;
    default:
      break;
  }
}

init();
