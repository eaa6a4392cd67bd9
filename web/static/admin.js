// Scan2Order admin console, served at /admin.
//
// Restaurants, categories, menu items, tables (QR codes, token rotation) and
// chefs, all through /api/v1/admin/. Server validation errors are shown next
// to the form that caused them. A dish's choices and photo are edited in
// admin-dish.js.

import {
  h, byId, show, setChildren, ApiError, errorMessage, formatMoney, centsToDecimal, parseMoney,
  currencyDigits, formatDateTime, safeUrl, toast, confirmDialog, StaffSession, wireLoginForm,
} from '/static/common.js';
import { allergenChecks, checkedAllergens, openDishEditor } from '/static/admin-dish.js';

const TABS = [
  ['settings', 'Settings'],
  ['categories', 'Categories'],
  ['items', 'Menu items'],
  ['tables', 'Tables & QR'],
  ['staff', 'Chefs'],
];
const CONFLICT_FIELDS = { slug_taken: 'slug', label_taken: 'label', username_taken: 'username' };

const staff = new StaffSession();
const state = {
  user: null,
  restaurants: [],
  currentId: null, // selected restaurant id, or null
  creating: false, // the "new restaurant" form is shown
  tab: 'settings',
  data: { categories: [], items: [], tables: [], staff: [] },
  loadState: 'idle', // idle | loading | loaded | error
  loadError: null,
  editing: null, // {kind, id}
  qrOpen: new Set(), // table ids with the QR preview open
  qrVersion: new Map(), // table id → cache-buster after a rotation
};
const dom = {};

const enc = encodeURIComponent;
const base = (id = state.currentId) => `/api/v1/admin/restaurants/${enc(id)}`;
const current = () => state.restaurants.find((r) => String(r.id) === String(state.currentId)) || null;
const listOf = (data, key) => (Array.isArray(data) ? data : data && Array.isArray(data[key]) ? data[key] : []);
const byPosition = (a, b) => (Number(a.position) || 0) - (Number(b.position) || 0) || String(a.name ?? a.label).localeCompare(String(b.name ?? b.label));

// ---------------------------------------------------------------------------
// Start-up and session
// ---------------------------------------------------------------------------

function setView(name) {
  show(dom.loadingView, name === 'loading');
  show(dom.loginView, name === 'login');
  show(dom.deniedView, name === 'denied');
  show(dom.consoleView, name === 'console');
  if (name === 'login') setTimeout(() => dom.loginForm.elements.username.focus(), 0);
}

async function boot() {
  for (const id of ['login-view', 'login-form', 'denied-view', 'loading-view', 'console-view', 'admin-user',
    'restaurant-list', 'new-restaurant', 'admin-main']) {
    dom[id.replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = byId(id);
  }
  staff.onUnauthenticated = () => {
    state.user = null;
    setView('login');
    dom.loginForm.querySelector('[data-testid="login-error"]').textContent = 'Your session has ended. Please sign in again.';
  };
  wireLoginForm(dom.loginForm, staff, signedIn);
  for (const button of document.querySelectorAll('[data-action="logout"]')) {
    button.addEventListener('click', async () => {
      await staff.logout();
      state.user = null;
      setView('login');
    });
  }
  dom.newRestaurant.addEventListener('click', () => {
    state.creating = true;
    state.currentId = null;
    saveRoute();
    renderSidebar();
    renderMain();
  });
  window.addEventListener('hashchange', () => {
    if (state.user) applyRoute();
  });
  await checkSession();
}

async function checkSession() {
  try {
    const user = await staff.me();
    if (user) await signedIn(user);
    else setView('login');
  } catch (err) {
    setChildren(dom.loadingView, h('p', { class: 'muted', text: `${errorMessage(err)} Retrying…` }));
    setTimeout(checkSession, 5000);
  }
}

async function signedIn(user) {
  state.user = user;
  if (!user || user.role !== 'admin') {
    setView('denied');
    return;
  }
  dom.adminUser.textContent = `Signed in as ${user.username}`;
  // The console appears once the restaurant list is in: shown earlier, a form opened meanwhile (e.g.
  // "New restaurant") would be rebuilt empty under the person's typing when the list arrives.
  setView('loading');
  await loadRestaurants();
  setView('console');
  applyRoute();
}

async function loadRestaurants() {
  try {
    const data = await staff.request('GET', '/api/v1/admin/restaurants', { retry: { attempts: 3 } });
    state.restaurants = listOf(data, 'restaurants');
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) toast(errorMessage(err), 'error', 8000);
  }
  renderSidebar();
}

// The selection lives in the URL hash (#r=<id>&tab=<tab>) so a reload keeps it.
function applyRoute() {
  const params = new URLSearchParams(location.hash.slice(1));
  const id = params.get('r');
  const tab = params.get('tab');
  state.tab = TABS.some(([key]) => key === tab) ? tab : 'settings';
  if (params.get('new') === '1') {
    state.creating = true;
    state.currentId = null;
  } else if (id && state.restaurants.some((r) => String(r.id) === id)) {
    state.creating = false;
    state.currentId = id;
  } else {
    state.creating = false;
    state.currentId = state.restaurants.length ? String(state.restaurants[0].id) : null;
    if (!state.currentId) state.creating = true;
  }
  renderSidebar();
  openTab(state.tab);
}

function saveRoute() {
  const params = new URLSearchParams();
  if (state.creating) params.set('new', '1');
  else if (state.currentId) {
    params.set('r', state.currentId);
    params.set('tab', state.tab);
  }
  history.replaceState(null, '', `#${params}`);
}

// ---------------------------------------------------------------------------
// Form helpers
// ---------------------------------------------------------------------------

function field(label, control, hint) {
  return h('label', { class: 'field' },
    h('span', { class: 'field-label', text: label }),
    control,
    hint ? h('span', { class: 'field-hint', text: hint }) : null);
}

function checkboxField(label, control) {
  return h('label', { class: 'field field-check' }, control, h('span', { text: label }));
}

function input(props) {
  return h('input', { class: 'input', type: 'text', ...props });
}

function formErrorEl() {
  return h('p', { class: 'form-error', testid: 'form-error', role: 'alert' });
}

function clearInvalid(form) {
  for (const el of form.querySelectorAll('[aria-invalid="true"]')) el.removeAttribute('aria-invalid');
}

function markInvalid(form, name) {
  const el = form.elements[name];
  if (el && typeof el.setAttribute === 'function') {
    el.setAttribute('aria-invalid', 'true');
    el.focus();
  }
}

/** Flag the fields named in a server validation or conflict error. */
function markServerError(form, err) {
  if (!(err instanceof ApiError)) return;
  if (CONFLICT_FIELDS[err.code]) {
    markInvalid(form, CONFLICT_FIELDS[err.code]);
    return;
  }
  if (err.code !== 'invalid_request') return;
  const message = (err.message || '').toLowerCase();
  for (const el of form.elements) {
    if (el.name && new RegExp(`(^|[^a-z_])${el.name.toLowerCase()}([^a-z_]|$)`).test(message)) {
      el.setAttribute('aria-invalid', 'true');
    }
  }
  const first = form.querySelector('[aria-invalid="true"]');
  if (first) first.focus();
}

/** A client-side validation failure, shown like a server one. */
class FormProblem extends Error {
  constructor(message, fieldName) {
    super(message);
    this.fieldName = fieldName;
  }
}

/** Run a form action: disable submit, show errors next to the form, flag fields. */
async function runForm(form, action) {
  const errorEl = form.querySelector('[data-testid="form-error"]');
  const submit = form.querySelector('[type="submit"]');
  errorEl.textContent = '';
  clearInvalid(form);
  if (submit) submit.disabled = true;
  try {
    await action();
  } catch (err) {
    if (err instanceof FormProblem) {
      errorEl.textContent = err.message;
      if (err.fieldName) markInvalid(form, err.fieldName);
    } else if (!(err instanceof ApiError && err.status === 401)) {
      errorEl.textContent = errorMessage(err);
      markServerError(form, err);
    }
  } finally {
    if (submit && submit.isConnected) submit.disabled = false;
  }
}

function parseIntField(value, name, label, { min = 0, optional = false } = {}) {
  const s = String(value ?? '').trim();
  if (!s) {
    if (optional) return undefined;
    throw new FormProblem(`${label} is required.`, name);
  }
  if (!/^-?\d+$/.test(s) || Number(s) < min) throw new FormProblem(`${label} must be a whole number of at least ${min}.`, name);
  return Number(s);
}

function required(value, name, label) {
  const s = String(value ?? '').trim();
  if (!s) throw new FormProblem(`${label} is required.`, name);
  return s;
}

function tagsFrom(text) {
  return [...new Set(String(text || '').split(',').map((t) => t.trim()).filter(Boolean))];
}

/** Only the fields whose value differs from the original. */
function diff(original, values) {
  const patch = {};
  for (const [key, value] of Object.entries(values)) {
    if (value === undefined) continue;
    const before = original[key] ?? (Array.isArray(value) ? [] : value === '' ? '' : null);
    if (JSON.stringify(value) !== JSON.stringify(before)) patch[key] = value;
  }
  return patch;
}

function actionButton(label, testid, onClick, kind = 'btn-secondary', extra = {}) {
  return h('button', { type: 'button', class: ['btn', 'btn-small', kind], testid, text: label, on: { click: onClick }, ...extra });
}

// ---------------------------------------------------------------------------
// Sidebar and main frame
// ---------------------------------------------------------------------------

function renderSidebar() {
  setChildren(dom.restaurantList, state.restaurants.length
    ? state.restaurants.map((r) => {
      const selected = !state.creating && String(r.id) === String(state.currentId);
      return h('li', {},
        h('button', {
          type: 'button', class: ['nav-item', selected && 'is-active'], testid: 'restaurant-list-item',
          dataset: { restaurantId: r.id }, 'aria-current': selected ? 'page' : 'false',
          on: { click: () => selectRestaurant(String(r.id)) },
        },
        h('span', { class: 'nav-item-title', text: r.name }),
        h('span', { class: 'nav-item-sub', text: r.slug })));
    })
    : h('li', { class: 'muted small', text: 'No restaurants yet.' }));
}

function selectRestaurant(id) {
  state.creating = false;
  state.currentId = id;
  state.editing = null;
  state.qrOpen.clear();
  renderSidebar();
  openTab(state.tab);
}

function openTab(tab) {
  state.tab = tab;
  state.editing = null;
  saveRoute();
  renderMain();
  if (!state.creating && state.currentId) loadTab();
}

function renderMain() {
  if (state.creating) {
    setChildren(dom.adminMain, newRestaurantForm());
    return;
  }
  const r = current();
  if (!r) {
    setChildren(dom.adminMain, h('div', { class: 'empty-state' },
      h('p', { text: 'Create your first restaurant to get started.' })));
    return;
  }
  setChildren(dom.adminMain,
    h('div', { class: 'admin-heading' },
      h('h2', { testid: 'restaurant-title', text: r.name }),
      h('span', { class: ['pill', r.accepting_orders === false ? 'pill-danger' : 'pill-ok'], text: r.accepting_orders === false ? 'Ordering paused' : 'Taking orders' })),
    h('nav', { class: 'tabs', role: 'tablist', 'aria-label': 'Restaurant sections' },
      TABS.map(([key, label]) => h('button', {
        type: 'button', class: 'tab', role: 'tab', 'aria-selected': String(state.tab === key),
        testid: `admin-tab-${key}`, text: label, on: { click: () => openTab(key) },
      }))),
    h('section', { id: 'tab-panel', class: 'tab-panel', role: 'tabpanel', testid: `panel-${state.tab}` }, renderTabBody()));
}

function refreshPanel() {
  const panel = document.getElementById('tab-panel');
  if (panel) setChildren(panel, renderTabBody());
  else renderMain();
}

async function loadTab() {
  const id = state.currentId;
  const tab = state.tab;
  state.loadState = 'loading';
  state.loadError = null;
  refreshPanel();
  try {
    if (tab === 'categories') {
      state.data.categories = listOf(await staff.request('GET', `${base(id)}/categories`, { retry: { attempts: 3 } }), 'categories');
    } else if (tab === 'items') {
      const [cats, items] = await Promise.all([
        staff.request('GET', `${base(id)}/categories`, { retry: { attempts: 3 } }),
        staff.request('GET', `${base(id)}/menu-items`, { retry: { attempts: 3 } }),
      ]);
      state.data.categories = listOf(cats, 'categories');
      state.data.items = listOf(items, 'items');
    } else if (tab === 'tables') {
      state.data.tables = listOf(await staff.request('GET', `${base(id)}/tables`, { retry: { attempts: 3 } }), 'tables');
    } else if (tab === 'staff') {
      state.data.staff = listOf(await staff.request('GET', `${base(id)}/staff`, { retry: { attempts: 3 } }), 'staff');
    } else if (tab === 'settings') {
      const fresh = await staff.request('GET', base(id), { retry: { attempts: 3 } });
      if (fresh && fresh.id !== undefined) replaceRestaurant(fresh);
    }
    if (id !== state.currentId || tab !== state.tab) return; // the user moved on
    state.loadState = 'loaded';
  } catch (err) {
    if (id !== state.currentId || tab !== state.tab) return;
    state.loadState = 'error';
    state.loadError = err;
  }
  if (tab === 'settings') renderMain();
  else refreshPanel();
}

function renderTabBody() {
  if (state.loadState === 'error') {
    return h('div', { class: 'empty-state' },
      h('p', { class: 'form-error', role: 'alert', text: errorMessage(state.loadError) }),
      h('button', { type: 'button', class: 'btn btn-secondary', text: 'Try again', on: { click: loadTab } }));
  }
  if (state.loadState === 'loading' && state.tab !== 'settings') return h('p', { class: 'muted', text: 'Loading…' });
  switch (state.tab) {
    case 'categories': return categoriesTab();
    case 'items': return itemsTab();
    case 'tables': return tablesTab();
    case 'staff': return staffTab();
    default: return settingsTab();
  }
}

function replaceRestaurant(updated) {
  const i = state.restaurants.findIndex((r) => String(r.id) === String(updated.id));
  if (i >= 0) state.restaurants[i] = { ...state.restaurants[i], ...updated };
  else state.restaurants.push(updated);
  renderSidebar();
}

// ---------------------------------------------------------------------------
// Restaurants
// ---------------------------------------------------------------------------

function timeZoneList() {
  try { return Intl.supportedValuesOf('timeZone'); } catch { return []; }
}

function currencyList() {
  try { return Intl.supportedValuesOf('currency'); } catch { return ['EUR', 'GBP', 'USD', 'CHF', 'JPY', 'SEK', 'NOK', 'DKK', 'PLN', 'CZK']; }
}

function datalist(id, values) {
  return h('datalist', { id }, values.map((v) => h('option', { value: v })));
}

function slugify(text) {
  return String(text).normalize('NFKD').replace(/[\u0300-\u036f]/g, '').toLowerCase()
    .replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 60);
}

function restaurantFields(r, { creating }) {
  // The slug is chosen once: PATCH restaurants/{id} does not take it, so when editing it is shown
  // read-only and never sent.
  const slug = creating
    ? input({ name: 'slug', required: true, value: r.slug || '', testid: 'restaurant-slug', autocapitalize: 'none', spellcheck: false, pattern: '[a-z0-9]+(-[a-z0-9]+)*' })
    : input({ name: 'slug', value: r.slug || '', testid: 'restaurant-slug', readOnly: true, class: 'input input-readonly', spellcheck: false });
  const name = input({ name: 'name', required: true, value: r.name || '', testid: 'restaurant-name-input', maxlength: 120 });
  if (creating) {
    name.addEventListener('input', () => {
      if (!slug.dataset.touched) slug.value = slugify(name.value);
    });
    slug.addEventListener('input', () => { slug.dataset.touched = '1'; });
  }
  return [
    field('Name', name),
    field('Slug', slug, creating ? 'Lowercase letters, digits and dashes; used in links. It cannot be changed later.' : 'Fixed when the restaurant was created.'),
    h('div', { class: 'form-row' },
      field('Currency', input({ name: 'currency', required: true, value: r.currency || '', testid: 'restaurant-currency', list: 'currency-list', maxlength: 3, autocapitalize: 'characters', spellcheck: false }),
        creating ? 'ISO 4217 code, e.g. EUR.' : 'Prices are kept in minor units; changing the currency does not convert them.'),
      field('Time zone', input({ name: 'time_zone', required: true, value: r.time_zone || defaultTimeZone(), testid: 'restaurant-time-zone', list: 'tz-list', spellcheck: false }))),
    datalist('currency-list', currencyList()),
    datalist('tz-list', timeZoneList()),
  ];
}

function defaultTimeZone() {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'; } catch { return 'UTC'; }
}

/** Name, currency and time zone of a restaurant form; the slug too when creating (`withSlug`). */
function readRestaurantBasics(form, { withSlug }) {
  const currency = required(form.elements.currency.value, 'currency', 'Currency').toUpperCase();
  if (!/^[A-Z]{3}$/.test(currency)) throw new FormProblem('Currency must be a three-letter ISO 4217 code, e.g. EUR.', 'currency');
  const values = {
    name: required(form.elements.name.value, 'name', 'Name'),
    currency,
    time_zone: required(form.elements.time_zone.value, 'time_zone', 'Time zone'),
  };
  if (withSlug) {
    const slug = required(form.elements.slug.value, 'slug', 'Slug').toLowerCase();
    if (!/^[a-z0-9]+(-[a-z0-9]+)*$/.test(slug)) throw new FormProblem('The slug may only contain lowercase letters, digits and single dashes.', 'slug');
    return { slug, ...values };
  }
  return values;
}

function newRestaurantForm() {
  const form = h('form', { class: 'card stack form-narrow', testid: 'new-restaurant-form', novalidate: true },
    h('h2', { text: 'New restaurant' }),
    restaurantFields({}, { creating: true }),
    formErrorEl(),
    h('div', { class: 'form-actions' },
      h('button', { type: 'submit', class: 'btn btn-primary', testid: 'restaurant-create', text: 'Create restaurant' })));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    runForm(form, async () => {
      const body = readRestaurantBasics(form, { withSlug: true });
      const created = await staff.request('POST', '/api/v1/admin/restaurants', { body });
      replaceRestaurant(created);
      toast(`Created ${created.name}.`, 'ok');
      state.creating = false;
      state.tab = 'settings';
      selectRestaurant(String(created.id));
    });
  });
  return form;
}

function settingsTab() {
  const r = current();
  const form = h('form', { class: 'card stack form-narrow', testid: 'restaurant-form', novalidate: true },
    restaurantFields(r, { creating: false }),
    checkboxField('Taking orders', h('input', { type: 'checkbox', name: 'accepting_orders', checked: r.accepting_orders !== false, testid: 'restaurant-accepting' })),
    h('div', { class: 'form-row' },
      field('Ticket turns amber after (seconds)', input({ name: 'ticket_warn_after_s', type: 'number', min: 0, step: 1, inputmode: 'numeric', value: r.ticket_warn_after_s ?? '', testid: 'restaurant-warn-after' })),
      field('Ticket turns red after (seconds)', input({ name: 'ticket_late_after_s', type: 'number', min: 0, step: 1, inputmode: 'numeric', value: r.ticket_late_after_s ?? '', testid: 'restaurant-late-after' }))),
    formErrorEl(),
    h('div', { class: 'form-actions' },
      h('button', { type: 'submit', class: 'btn btn-primary', testid: 'restaurant-save', text: 'Save changes' })));
  if (state.loadState === 'loading') {
    // The fresh copy of the restaurant replaces this form when it arrives: no typing into it until then.
    for (const el of form.elements) el.disabled = true;
    form.setAttribute('aria-busy', 'true');
  }
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    runForm(form, async () => {
      const values = {
        ...readRestaurantBasics(form, { withSlug: false }),
        accepting_orders: form.elements.accepting_orders.checked,
        ticket_warn_after_s: parseIntField(form.elements.ticket_warn_after_s.value, 'ticket_warn_after_s', 'Amber after', { optional: true }),
        ticket_late_after_s: parseIntField(form.elements.ticket_late_after_s.value, 'ticket_late_after_s', 'Red after', { optional: true }),
      };
      if (values.ticket_warn_after_s !== undefined && values.ticket_late_after_s !== undefined
        && values.ticket_late_after_s < values.ticket_warn_after_s) {
        throw new FormProblem('"Red after" must not be shorter than "amber after".', 'ticket_late_after_s');
      }
      const patch = diff(r, values);
      if (!Object.keys(patch).length) {
        toast('Nothing changed.', 'info', 2500);
        return;
      }
      const updated = await staff.request('PATCH', base(r.id), { body: patch });
      replaceRestaurant(updated && updated.id !== undefined ? updated : { ...r, ...patch });
      toast('Saved.', 'ok', 2500);
      renderMain();
    });
  });

  return h('div', { class: 'stack' },
    form,
    h('dl', { class: 'meta-list' },
      h('dt', { text: 'Id' }), h('dd', { class: 'mono', text: String(r.id) }),
      r.created_at ? [h('dt', { text: 'Created' }), h('dd', { text: formatDateTime(r.created_at) })] : null),
    h('p', { class: 'muted small' },
      'Orders are handled on the ',
      h('a', { href: '/kitchen', text: 'kitchen display' }),
      '; administrators pick this restaurant there.'));
}

// ---------------------------------------------------------------------------
// Categories
// ---------------------------------------------------------------------------

function categoriesTab() {
  const categories = [...state.data.categories].sort(byPosition);
  const form = h('form', { class: 'card inline-form', testid: 'category-form', novalidate: true },
    field('New category', input({ name: 'name', required: true, maxlength: 120, testid: 'category-name', placeholder: 'e.g. Starters' })),
    field('Position', input({ name: 'position', type: 'number', step: 1, min: 0, inputmode: 'numeric', testid: 'category-position', placeholder: 'auto' })),
    h('button', { type: 'submit', class: 'btn btn-primary', testid: 'category-create', text: 'Add category' }),
    formErrorEl());
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    runForm(form, async () => {
      const body = { name: required(form.elements.name.value, 'name', 'Name') };
      const position = parseIntField(form.elements.position.value, 'position', 'Position', { optional: true });
      if (position !== undefined) body.position = position;
      const created = await staff.request('POST', `${base()}/categories`, { body });
      state.data.categories.push(created);
      refreshPanel();
      toast(`Added ${created.name}.`, 'ok', 2500);
    });
  });

  return h('div', { class: 'stack' },
    form,
    categories.length
      ? h('ul', { class: 'rows', testid: 'category-list' }, categories.map(categoryRow))
      : h('p', { class: 'muted', testid: 'category-empty', text: 'No categories yet. Add one above, then add dishes to it.' }));
}

function categoryRow(category) {
  const id = String(category.id);
  const editing = state.editing && state.editing.kind === 'category' && state.editing.id === id;
  const rowError = formErrorEl();
  if (editing) {
    const form = h('form', { class: 'inline-form', novalidate: true },
      field('Name', input({ name: 'name', required: true, maxlength: 120, value: category.name, testid: 'category-edit-name' })),
      field('Position', input({ name: 'position', type: 'number', step: 1, min: 0, value: category.position ?? '', testid: 'category-edit-position' })),
      h('button', { type: 'submit', class: 'btn btn-primary btn-small', testid: 'category-save', text: 'Save' }),
      actionButton('Cancel', 'category-cancel', () => { state.editing = null; refreshPanel(); }, 'btn-ghost'),
      rowError);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      runForm(form, async () => {
        const patch = diff(category, {
          name: required(form.elements.name.value, 'name', 'Name'),
          position: parseIntField(form.elements.position.value, 'position', 'Position', { optional: true }),
        });
        if (Object.keys(patch).length) {
          const updated = await staff.request('PATCH', `${base()}/categories/${enc(id)}`, { body: patch });
          Object.assign(category, updated && updated.id !== undefined ? updated : patch);
        }
        state.editing = null;
        refreshPanel();
      });
    });
    return h('li', { class: 'row is-editing', testid: 'category-row', dataset: { categoryId: id } }, form);
  }
  return h('li', { class: 'row', testid: 'category-row', dataset: { categoryId: id } },
    h('div', { class: 'row-main' },
      h('span', { class: 'row-title', testid: 'category-row-name', text: category.name }),
      h('span', { class: 'muted small', text: `Position ${category.position ?? '—'}` })),
    h('div', { class: 'row-actions' },
      actionButton('Edit', 'category-edit', () => { state.editing = { kind: 'category', id }; refreshPanel(); }),
      actionButton('Delete', 'category-delete', async () => {
        const ok = await confirmDialog(`Delete the category “${category.name}”? It must have no dishes left.`, { title: 'Delete category?', confirmLabel: 'Delete', danger: true });
        if (!ok) return;
        try {
          await staff.request('DELETE', `${base()}/categories/${enc(id)}`);
          state.data.categories = state.data.categories.filter((c) => String(c.id) !== id);
          refreshPanel();
          toast(`Deleted ${category.name}.`, 'ok', 2500);
        } catch (err) {
          if (!(err instanceof ApiError && err.status === 401)) {
            rowError.textContent = errorMessage(err);
          }
        }
      }, 'btn-danger-ghost')),
    rowError);
}

// ---------------------------------------------------------------------------
// Menu items
// ---------------------------------------------------------------------------

function itemsTab() {
  const r = current();
  const categories = [...state.data.categories].sort(byPosition);
  if (!categories.length) {
    return h('div', { class: 'empty-state', testid: 'items-need-category' },
      h('p', { text: 'Dishes belong to a category. Create a category first.' }),
      h('button', { type: 'button', class: 'btn btn-primary', text: 'Go to categories', on: { click: () => openTab('categories') } }));
  }
  const editingId = state.editing && state.editing.kind === 'item' ? state.editing.id : null;
  const editingItem = editingId ? state.data.items.find((i) => String(i.id) === editingId) : null;
  const form = itemForm(r, categories, editingItem);

  const groups = categories.map((c) => ({ category: c, items: [] }));
  const other = { category: { id: null, name: 'Without a category' }, items: [] };
  for (const item of state.data.items) {
    const group = groups.find((g) => String(g.category.id) === String(item.category_id)) || other;
    group.items.push(item);
  }
  if (other.items.length) groups.push(other);

  return h('div', { class: 'stack' },
    form,
    h('div', { testid: 'item-list', class: 'stack' }, groups.map((g) => h('section', { class: 'item-group' },
      h('h3', { class: 'group-title', text: g.category.name }),
      g.items.length
        ? h('ul', { class: 'rows' }, [...g.items].sort(byPosition).map((item) => itemRow(r, item)))
        : h('p', { class: 'muted small', text: 'No dishes in this category.' })))));
}

function itemForm(r, categories, item) {
  const editing = !!item;
  const v = item || { available: true };
  const digits = currencyDigits(r.currency);
  const form = h('form', { class: 'card stack', testid: 'item-form', novalidate: true },
    h('h3', { text: editing ? `Edit “${v.name}”` : 'Add a dish' }),
    h('div', { class: 'form-row' },
      field('Category', categorySelect(categories, v.category_id)),
      field('Name', input({ name: 'name', required: true, maxlength: 120, value: v.name || '', testid: 'item-name' }))),
    field('Description', h('textarea', { class: 'input', name: 'description', rows: 2, maxlength: 1000, value: v.description || '', testid: 'item-description' })),
    h('div', { class: 'form-row' },
      field(`Price (${r.currency})`, input({
        name: 'price', required: true, inputmode: digits ? 'decimal' : 'numeric', testid: 'item-price',
        value: editing ? centsToDecimal(v.price_cents, r.currency) : '',
        placeholder: digits ? `e.g. 12.${'5'.padEnd(digits, '0')}` : 'e.g. 1200',
      })),
      field('Position', input({ name: 'position', type: 'number', step: 1, min: 0, inputmode: 'numeric', value: v.position ?? '', testid: 'item-position', placeholder: 'auto' }))),
    field('Tags', input({ name: 'tags', value: (v.tags || []).join(', '), testid: 'item-tags', placeholder: 'vegan, gluten-free' }), 'Comma-separated; shown to guests as chips.'),
    checkboxField('Available (not sold out)', h('input', { type: 'checkbox', name: 'available', checked: v.available !== false, testid: 'item-available' })),
    allergenChecks(v.allergens, 'item-allergen'),
    formErrorEl(),
    h('div', { class: 'form-actions' },
      editing ? actionButton('Cancel', 'item-cancel-edit', () => { state.editing = null; refreshPanel(); }, 'btn-ghost') : null,
      h('button', { type: 'submit', class: 'btn btn-primary', testid: 'item-submit', text: editing ? 'Save changes' : 'Add dish' })));

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    runForm(form, async () => {
      const priceCents = parseMoney(form.elements.price.value, r.currency);
      if (priceCents === null) {
        throw new FormProblem(digits
          ? `Enter the price as an amount like 12.50 (at most ${digits} decimals).`
          : 'Enter the price as a whole amount, e.g. 1200.', 'price');
      }
      const values = {
        category_id: form.elements.category_id.value,
        name: required(form.elements.name.value, 'name', 'Name'),
        description: form.elements.description.value.trim(),
        price_cents: priceCents,
        available: form.elements.available.checked,
        tags: tagsFrom(form.elements.tags.value),
        allergens: checkedAllergens(form),
        position: parseIntField(form.elements.position.value, 'position', 'Position', { optional: true }),
      };
      if (editing) {
        const patch = diff(item, values);
        if (patch.category_id !== undefined && String(patch.category_id) === String(item.category_id)) delete patch.category_id;
        if (Object.keys(patch).length) {
          const updated = await staff.request('PATCH', `${base(r.id)}/menu-items/${enc(item.id)}`, { body: patch });
          Object.assign(item, updated && updated.id !== undefined ? updated : patch);
        }
        state.editing = null;
        toast('Saved.', 'ok', 2500);
      } else {
        const body = { ...values };
        if (!body.description) delete body.description;
        if (body.position === undefined) delete body.position;
        const created = await staff.request('POST', `${base(r.id)}/menu-items`, { body });
        state.data.items.push(created);
        toast(`Added ${created.name}.`, 'ok', 2500);
      }
      refreshPanel();
      const next = document.querySelector('[data-testid="item-name"]');
      if (next && !editing) next.focus();
    });
  });
  return form;
}

function categorySelect(categories, selectedId) {
  const select = h('select', { class: 'input', name: 'category_id', testid: 'item-category' },
    categories.map((c) => h('option', { value: String(c.id), text: c.name })));
  if (selectedId !== undefined && selectedId !== null && categories.some((c) => String(c.id) === String(selectedId))) {
    select.value = String(selectedId);
  }
  return select;
}

function itemRow(r, item) {
  const id = String(item.id);
  const rowError = formErrorEl();
  return h('li', { class: ['row', item.available === false && 'is-muted'], testid: 'item-row', dataset: { itemId: id } },
    h('div', { class: 'row-main' },
      h('span', { class: 'row-title', testid: 'item-row-name', text: item.name }),
      h('span', { class: 'row-price', testid: 'item-row-price', text: formatMoney(item.price_cents, r.currency) }),
      item.available === false ? h('span', { class: 'pill pill-danger', text: 'Sold out' }) : null,
      (item.tags || []).length ? h('span', { class: 'tags' }, item.tags.map((t) => h('span', { class: 'tag', text: t }))) : null,
      item.description ? h('span', { class: 'row-desc muted small', text: item.description }) : null,
      (item.option_groups || []).length ? h('span', { class: 'muted small', testid: 'item-row-choices', text: item.option_groups.map((g) => `${g.name} (${(g.options || []).length})`).join(' · ') }) : null,
      item.thumbnail_url ? h('span', { class: 'pill', testid: 'item-row-photo', text: 'Photo' }) : null),
    h('div', { class: 'row-actions' },
      actionButton('Choices & photo', 'item-choices', () => openDishEditor({
        r, item, staff, base: base(r.id),
        onChange: (updated) => {
          const i = state.data.items.findIndex((x) => String(x.id) === id);
          if (i >= 0 && updated && updated.id !== undefined) state.data.items[i] = updated;
        },
        onClose: () => refreshPanel(),
      })),
      actionButton('Edit', 'item-edit', () => {
        state.editing = { kind: 'item', id };
        refreshPanel();
        const form = document.querySelector('[data-testid="item-form"]');
        if (form) form.scrollIntoView({ block: 'start', behavior: 'smooth' });
      }),
      actionButton('Delete', 'item-delete', async () => {
        const ok = await confirmDialog(`Delete “${item.name}” from the menu? Past orders keep their copy.`, { title: 'Delete dish?', confirmLabel: 'Delete', danger: true });
        if (!ok) return;
        try {
          await staff.request('DELETE', `${base(r.id)}/menu-items/${enc(id)}`);
          state.data.items = state.data.items.filter((i) => String(i.id) !== id);
          if (state.editing && state.editing.id === id) state.editing = null;
          refreshPanel();
          toast(`Deleted ${item.name}.`, 'ok', 2500);
        } catch (err) {
          if (!(err instanceof ApiError && err.status === 401)) rowError.textContent = errorMessage(err);
        }
      }, 'btn-danger-ghost')),
    rowError);
}

// ---------------------------------------------------------------------------
// Tables and QR codes
// ---------------------------------------------------------------------------

function tablesTab() {
  const r = current();
  const tables = [...state.data.tables].sort((a, b) => String(a.label).localeCompare(String(b.label), undefined, { numeric: true }));
  const form = h('form', { class: 'card inline-form', testid: 'table-form', novalidate: true },
    field('New table label', input({ name: 'label', required: true, maxlength: 60, testid: 'table-label-input', placeholder: 'e.g. 12 or Terrace 3' })),
    h('button', { type: 'submit', class: 'btn btn-primary', testid: 'table-create', text: 'Add table' }),
    formErrorEl());
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    runForm(form, async () => {
      const created = await staff.request('POST', `${base(r.id)}/tables`, { body: { label: required(form.elements.label.value, 'label', 'Label') } });
      state.data.tables.push(created);
      state.qrOpen.add(String(created.id));
      refreshPanel();
      toast(`Added table ${created.label}.`, 'ok', 2500);
    });
  });

  return h('div', { class: 'stack' },
    h('div', { class: 'row-wrap' },
      h('a', {
        class: 'btn btn-secondary', href: `${base(r.id)}/qr-sheet`, target: '_blank', rel: 'noopener',
        testid: 'qr-sheet-link', text: 'Open printable QR sheet',
      }),
      h('span', { class: 'muted small', text: 'One page with every table’s QR code and label, ready to print.' })),
    form,
    tables.length
      ? h('ul', { class: 'rows', testid: 'table-list' }, tables.map((t) => tableRow(r, t)))
      : h('p', { class: 'muted', testid: 'table-empty', text: 'No tables yet.' }));
}

function tableRow(r, table) {
  const id = String(table.id);
  const rowError = formErrorEl();
  const editing = state.editing && state.editing.kind === 'table' && state.editing.id === id;
  const qrOpen = state.qrOpen.has(id);
  const url = table.url ? safeUrl(table.url) : null;
  const qrBase = `${base(r.id)}/tables/${enc(id)}/qr`;
  const version = state.qrVersion.get(id);
  const bust = version ? `?v=${version}` : '';

  let main;
  if (editing) {
    main = h('form', { class: 'inline-form', novalidate: true },
      field('Label', input({ name: 'label', required: true, maxlength: 60, value: table.label, testid: 'table-edit-label' })),
      h('button', { type: 'submit', class: 'btn btn-primary btn-small', testid: 'table-save', text: 'Save' }),
      actionButton('Cancel', 'table-cancel', () => { state.editing = null; refreshPanel(); }, 'btn-ghost'),
      formErrorEl());
    main.addEventListener('submit', (event) => {
      event.preventDefault();
      runForm(main, async () => {
        const label = required(main.elements.label.value, 'label', 'Label');
        if (label !== table.label) await patchTable(r, table, { label });
        state.editing = null;
        refreshPanel();
      });
    });
  } else {
    main = h('div', { class: 'row-main' },
      h('span', { class: 'row-title', testid: 'table-label', text: `Table ${table.label}` }),
      h('span', { class: ['pill', table.active === false ? 'pill-muted' : 'pill-ok'], testid: 'table-active', text: table.active === false ? 'Inactive' : 'Active' }),
      url ? h('a', { href: url, target: '_blank', rel: 'noopener', class: 'small', testid: 'table-url', text: 'Open guest page' }) : null);
  }

  return h('li', { class: ['row', 'table-row', table.active === false && 'is-muted'], testid: 'table-row', dataset: { tableId: id } },
    main,
    editing ? null : h('div', { class: 'row-actions' },
      actionButton(qrOpen ? 'Hide QR' : 'Show QR', 'table-qr-toggle', () => {
        if (qrOpen) state.qrOpen.delete(id); else state.qrOpen.add(id);
        refreshPanel();
      }, 'btn-secondary', { 'aria-expanded': String(qrOpen) }),
      actionButton('Rename', 'table-rename', () => { state.editing = { kind: 'table', id }; refreshPanel(); }),
      actionButton(table.active === false ? 'Activate' : 'Deactivate', 'table-active-toggle', async () => {
        try {
          await patchTable(r, table, { active: table.active === false });
          refreshPanel();
        } catch (err) {
          if (!(err instanceof ApiError && err.status === 401)) rowError.textContent = errorMessage(err);
        }
      }),
      actionButton('New QR code', 'table-rotate', () => rotateTable(r, table, rowError)),
      actionButton('Delete', 'table-delete', async () => {
        const ok = await confirmDialog(`Delete table ${table.label}? Its QR code stops working.`, { title: 'Delete table?', confirmLabel: 'Delete', danger: true });
        if (!ok) return;
        try {
          await staff.request('DELETE', `${base(r.id)}/tables/${enc(id)}`);
          state.data.tables = state.data.tables.filter((t) => String(t.id) !== id);
          refreshPanel();
          toast(`Deleted table ${table.label}.`, 'ok', 2500);
        } catch (err) {
          if (!(err instanceof ApiError && err.status === 401)) rowError.textContent = errorMessage(err);
        }
      }, 'btn-danger-ghost')),
    rowError,
    qrOpen && !editing ? h('figure', { class: 'qr-preview', testid: 'table-qr-preview' },
      h('img', { src: `${qrBase}.svg${bust}`, alt: `QR code for table ${table.label}`, width: 180, height: 180, testid: 'table-qr', loading: 'lazy' }),
      h('figcaption', { class: 'small' },
        h('a', { href: `${qrBase}.svg${bust}`, target: '_blank', rel: 'noopener', text: 'SVG' }), ' · ',
        h('a', { href: `${qrBase}.png${bust}`, target: '_blank', rel: 'noopener', text: 'PNG' }))) : null);
}

async function patchTable(r, table, patch) {
  const updated = await staff.request('PATCH', `${base(r.id)}/tables/${enc(table.id)}`, { body: patch });
  Object.assign(table, updated && updated.id !== undefined ? updated : patch);
}

async function rotateTable(r, table, rowError) {
  const ok = await confirmDialog(
    `Make a new QR code for table ${table.label}? The printed code stops working at once and guests at the table are disconnected; print and place the new one.`,
    { title: 'Replace this table’s QR code?', confirmLabel: 'Make new code', danger: true });
  if (!ok) return;
  try {
    const updated = await staff.request('POST', `${base(r.id)}/tables/${enc(table.id)}/rotate-token`);
    if (updated && updated.id !== undefined) Object.assign(table, updated);
    const id = String(table.id);
    state.qrVersion.set(id, Date.now());
    state.qrOpen.add(id);
    refreshPanel();
    toast(`Table ${table.label} has a new QR code. Print it and replace the old one.`, 'ok', 7000);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) rowError.textContent = errorMessage(err);
  }
}

// ---------------------------------------------------------------------------
// Chefs
// ---------------------------------------------------------------------------

function staffTab() {
  const r = current();
  const people = [...state.data.staff].sort((a, b) => String(a.username).localeCompare(String(b.username)));
  const form = h('form', { class: 'card inline-form', testid: 'staff-form', novalidate: true, autocomplete: 'off' },
    field('Username', input({ name: 'username', required: true, maxlength: 60, autocapitalize: 'none', spellcheck: false, autocomplete: 'off', testid: 'staff-username' })),
    field('Password', input({ name: 'password', type: 'password', required: true, autocomplete: 'new-password', testid: 'staff-password' })),
    h('button', { type: 'submit', class: 'btn btn-primary', testid: 'staff-create', text: 'Add chef' }),
    formErrorEl());
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    runForm(form, async () => {
      const body = {
        username: required(form.elements.username.value, 'username', 'Username'),
        password: required(form.elements.password.value, 'password', 'Password'),
      };
      const created = await staff.request('POST', `${base(r.id)}/staff`, { body });
      state.data.staff.push(created);
      refreshPanel();
      toast(`Added ${created.username}. They sign in at /kitchen.`, 'ok', 4000);
    });
  });

  return h('div', { class: 'stack' },
    h('p', { class: 'muted small', text: 'Chefs sign in on the kitchen display and see only this restaurant.' }),
    form,
    people.length
      ? h('ul', { class: 'rows', testid: 'staff-list' }, people.map((u) => staffRow(r, u)))
      : h('p', { class: 'muted', testid: 'staff-empty', text: 'No chefs yet.' }));
}

function staffRow(r, user) {
  const id = String(user.id);
  const rowError = formErrorEl();
  const editing = state.editing && state.editing.kind === 'staff' && state.editing.id === id;
  let passwordForm = null;
  if (editing) {
    passwordForm = h('form', { class: 'inline-form', novalidate: true },
      field('New password', input({ name: 'password', type: 'password', required: true, autocomplete: 'new-password', testid: 'staff-new-password' })),
      h('button', { type: 'submit', class: 'btn btn-primary btn-small', testid: 'staff-password-save', text: 'Set password' }),
      actionButton('Cancel', 'staff-password-cancel', () => { state.editing = null; refreshPanel(); }, 'btn-ghost'),
      formErrorEl());
    passwordForm.addEventListener('submit', (event) => {
      event.preventDefault();
      runForm(passwordForm, async () => {
        const password = required(passwordForm.elements.password.value, 'password', 'Password');
        await staff.request('PATCH', `${base(r.id)}/staff/${enc(id)}`, { body: { password } });
        state.editing = null;
        refreshPanel();
        toast(`Password changed. ${user.username} is signed out everywhere.`, 'ok', 4000);
      });
    });
  }
  return h('li', { class: 'row', testid: 'staff-row', dataset: { userId: id } },
    h('div', { class: 'row-main' },
      h('span', { class: 'row-title', testid: 'staff-row-username', text: user.username }),
      h('span', { class: 'pill pill-muted', text: user.role || 'chef' })),
    editing ? passwordForm : h('div', { class: 'row-actions' },
      actionButton('Change password', 'staff-password-change', () => { state.editing = { kind: 'staff', id }; refreshPanel(); }),
      actionButton('Remove', 'staff-remove', async () => {
        const ok = await confirmDialog(`Remove ${user.username}? They are signed out at once.`, { title: 'Remove chef?', confirmLabel: 'Remove', danger: true });
        if (!ok) return;
        try {
          await staff.request('DELETE', `${base(r.id)}/staff/${enc(id)}`);
          state.data.staff = state.data.staff.filter((u) => String(u.id) !== id);
          refreshPanel();
          toast(`Removed ${user.username}.`, 'ok', 2500);
        } catch (err) {
          if (!(err instanceof ApiError && err.status === 401)) rowError.textContent = errorMessage(err);
        }
      }, 'btn-danger-ghost')),
    rowError);
}

boot();
