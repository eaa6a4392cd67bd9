// The guest page's first load on a phone viewport, as Chromium fetches it: every response's bytes on
// the wire (headers and encoded body) until the network is idle, lazy-loaded thumbnails included.
// Usage: node tests/browser/first-load.mjs http://127.0.0.1:8080/t/<token>  (BENCHMARKS.md §4b)

import { chromium } from 'playwright-core';

const url = process.argv[2];
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium' });
const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
const page = await context.newPage();
const requests = [];
page.on('requestfinished', (r) => requests.push(r));
await page.goto(url, { waitUntil: 'networkidle' });
await page.waitForTimeout(500);
let total = 0;
const byKind = {};
for (const r of requests) {
  const sizes = await r.sizes();
  const bytes = sizes.responseBodySize + sizes.responseHeadersSize;
  const kind = r.url().includes('/media/') ? 'thumbnails' : r.url().includes('/api/') ? 'menu' : 'page, scripts, styles';
  byKind[kind] = byKind[kind] || { requests: 0, bytes: 0 };
  byKind[kind].requests += 1;
  byKind[kind].bytes += bytes;
  total += bytes;
}
console.log(JSON.stringify({ url, total_bytes: total, by_kind: byKind }, null, 2));
await browser.close();
