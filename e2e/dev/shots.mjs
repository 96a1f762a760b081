import { chromium } from 'playwright-core';
const base = process.argv[2] || 'http://127.0.0.1:8090/';
const out = process.argv[3] || '/tmp/shots';
import { mkdirSync } from 'node:fs';
mkdirSync(out, { recursive: true });
const b = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required'] });
const errs = [];
async function page(opts = {}) {
  const ctx = await b.newContext({ viewport: opts.viewport || { width: 1280, height: 800 }, ...(opts.ctx || {}) });
  const p = await ctx.newPage();
  p.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') errs.push(m.text()); });
  p.on('pageerror', (e) => errs.push('pageerror ' + e.message));
  return p;
}
const a = await page();
await a.goto(base);
await a.fill('#interest-input', 'music'); await a.press('#interest-input', 'Enter');
await a.fill('#interest-input', 'hiking'); await a.press('#interest-input', 'Enter');
await a.waitForTimeout(800);
await a.screenshot({ path: `${out}/landing.png` });
const ph = await page({ viewport: { width: 390, height: 844 }, ctx: { isMobile: true, hasTouch: true, deviceScaleFactor: 1 } });
await ph.goto(base); await ph.waitForTimeout(800);
await ph.screenshot({ path: `${out}/landing-phone.png`, fullPage: true });
// text chat
const t1 = await page(), t2 = await page();
for (const p of [t1, t2]) { await p.goto(base + '?mode=text'); await p.check('#accept'); await p.click('#start-btn'); }
await t1.waitForFunction(() => window.duet.state === 'matched');
await t1.fill('#chat-input', 'hello there'); await t1.press('#chat-input', 'Enter');
await t2.fill('#chat-input', 'hi! how are yo');
await t1.waitForSelector('#typing:not([hidden])');
await t1.screenshot({ path: `${out}/text-call.png` });
await t1.click('#report-btn'); await t1.check('input[value="harassment"]'); await t1.fill('#report-text', 'rude');
await t1.screenshot({ path: `${out}/report.png` });
await t1.click('#report-submit'); await t1.waitForTimeout(300);
await t1.screenshot({ path: `${out}/after-report.png` });
// video call screen (no media with the mock)
const v = await page(); await v.goto(base); await v.check('#accept'); await v.waitForTimeout(500); await v.click('#start-btn'); await v.waitForTimeout(800);
await v.screenshot({ path: `${out}/video-call-waiting.png` });
const vp = await page({ viewport: { width: 390, height: 844 }, ctx: { isMobile: true, hasTouch: true } }); await vp.goto(base); await vp.check('#accept'); await vp.waitForTimeout(500); await vp.click('#start-btn'); await vp.waitForTimeout(800);
await vp.screenshot({ path: `${out}/video-call-phone.png` });
// banned
const bn = await page(); await bn.goto(base); await bn.evaluate(() => localStorage.setItem('duet.device_id', 'banned12345')); await bn.reload(); await bn.check('#accept'); await bn.click('#start-btn'); await bn.waitForSelector('#blocked:not([hidden])');
await bn.screenshot({ path: `${out}/banned.png` });
// camera denied
const dctx = await b.newContext({ viewport: { width: 1280, height: 800 } });
const d = await dctx.newPage();
await d.route('**/*', (r) => r.continue());
await d.addInitScript(() => { navigator.mediaDevices.getUserMedia = async () => { throw new DOMException('Permission denied', 'NotAllowedError'); }; });
await d.goto(base); await d.waitForTimeout(500);
await d.screenshot({ path: `${out}/camera-denied.png` });
console.log('errors:', errs);
await b.close();
