// Direct calls to the Scan2Order HTTP API (PROTOCOL.md), for test set-up and for checking what the pages
// show against what the server holds.

import { randomUUID } from 'node:crypto';

export class ApiFailure extends Error {
  constructor(method, path, status, body) {
    super(`${method} ${path} answered ${status}: ${JSON.stringify(body)}`);
    this.status = status;
    this.body = body;
  }
}

export class Api {
  constructor(baseUrl, whatsapp) {
    this.baseUrl = baseUrl;
    this.whatsapp = whatsapp;
  }

  async raw(method, path, { token, body, headers = {} } = {}) {
    const h = { Accept: 'application/json', ...headers };
    if (token) h.Authorization = `Bearer ${token}`;
    if (body !== undefined) h['Content-Type'] = 'application/json';
    const res = await fetch(this.baseUrl + path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = text; }
    return { status: res.status, data, headers: res.headers };
  }

  /** A call that must succeed (2xx); resolves to the body. */
  async call(method, path, options = {}) {
    const res = await this.raw(method, path, options);
    if (res.status < 200 || res.status > 299) throw new ApiFailure(method, path, res.status, res.data);
    return res.data;
  }

  async login(username, password) {
    const data = await this.call('POST', '/api/v1/auth/login', { body: { username, password } });
    return data.token;
  }

  async table(tableToken) {
    return this.call('GET', `/api/v1/tables/${tableToken}`);
  }

  /** Verify `phone` with the code taken from the fake WhatsApp API; resolves to the customer token. */
  async customer(phone) {
    const from = this.whatsapp.messages.length;
    await this.call('POST', '/api/v1/otp/send', { body: { phone } });
    const code = await this.whatsapp.codeFor(phone, from);
    const data = await this.call('POST', '/api/v1/otp/verify', { body: { phone, code } });
    return data.customer_token;
  }

  async placeOrder(customerToken, tableToken, items, note) {
    const body = { table_token: tableToken, items };
    if (note) body.note = note;
    return this.call('POST', '/api/v1/orders', { token: customerToken, body, headers: { 'Idempotency-Key': randomUUID() } });
  }

  async kitchenOrders(staffToken) {
    const data = await this.call('GET', '/api/v1/kitchen/orders', { token: staffToken });
    return data.orders;
  }
}

/** A phone number nobody else in the run uses (+44 7700 9xxxxx, the UK's range reserved for drama). */
const phoneBase = Math.floor(Math.random() * 900_000);
let phoneCounter = 0;
export function uniquePhone() {
  phoneCounter += 1;
  return `+4477009${String((phoneBase + phoneCounter) % 1_000_000).padStart(6, '0')}`;
}

/** Every item of a table's menu, flattened, with its category. */
export function menuItems(tableData) {
  return tableData.menu.categories.flatMap((c) => c.items.map((i) => ({ ...i, category_id: c.id, category: c.name })));
}
