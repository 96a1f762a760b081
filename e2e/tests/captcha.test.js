// Challenges on abuse, against a local fake provider (lib/fake-captcha.js):
// a visitor reported as often as the threshold is shown the challenge when
// it presses Next; a refused token gets a clear message and the challenge
// again; a solved one lets it queue. With the verifier down, `closed` keeps
// the visitor out (with a message) and `open` lets it in.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDuet } from '../lib/server.js';
import { startFakeCaptcha, GOOD_TOKEN, BAD_TOKEN } from '../lib/fake-captcha.js';
import { launch, openPage, start, waitState, waitMatchedCount, screenshot, pageLog, consoleProblems } from '../lib/browser.js';

const SECRET = 'e2e-captcha-secret';
let fake;
let browser;
const servers = [];

function captchaArgs(failMode) {
  return [
    '--widen-after-secs', '1', '--cooldown-secs', '0',
    '--captcha-site-key', 'e2e-site-key', '--captcha-secret', SECRET,
    '--captcha-verify-url', fake.verifyUrl, '--captcha-script-url', fake.scriptUrl,
    '--captcha-timeout-ms', '2000', '--captcha-fail-mode', failMode, '--captcha-reports', '1',
  ];
}

before(async () => {
  fake = await startFakeCaptcha({ secret: SECRET });
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await Promise.all(servers.map((s) => s.stop()));
  if (fake) await fake.close();
});

async function textUser(server) {
  const p = await openPage(browser, server.base);
  await start(p, { mode: 'text' });
  return p;
}

/** `reporter` reports its current partner through the dialog. */
async function report(reporter) {
  await reporter.click('#report-btn');
  await reporter.locator('#report-dialog').waitFor({ state: 'visible' });
  await reporter.check('input[name="category"][value="spam"]');
  const [resp] = await Promise.all([
    reporter.waitForResponse((r) => r.url().endsWith('/api/reports') && r.request().method() === 'POST'),
    reporter.click('#report-submit'),
  ]);
  assert.equal(resp.status(), 201, `report answered ${resp.status()}`);
}

/** Presses Next and waits for the challenge dialog with the fake widget in it. */
async function nextShowsChallenge(p) {
  await p.click('#next-btn');
  await p.locator('#captcha-dialog').waitFor({ state: 'visible', timeout: 20000 })
    .catch(async (e) => { throw new Error(`no challenge shown: ${e.message}\n${await pageLog(p)}`); });
  await p.locator('#fake-captcha-solve').waitFor({ state: 'visible' });
  assert.equal(await p.getAttribute('#captcha-widget', 'data-sitekey'), 'e2e-site-key', 'the widget got the site key');
}

/** The visitor got in: queued, or already paired with someone who was
 * waiting (a partner can be found before a poll ever sees "queued"). */
function waitGotIn(p) {
  return p.waitForFunction(() => ['queued', 'matched'].includes(window.duet.state), null, { timeout: 20000 });
}

function sessionAnswer(p) {
  return p.waitForResponse((r) => r.url().endsWith('/api/session') && r.request().method() === 'POST');
}

test('fail closed: a reported visitor is challenged on Next; a wrong token is refused clearly, a solved one lets it in, and a verifier outage keeps it out', async () => {
  const server = await startDuet({ name: 'captcha-closed', args: captchaArgs('closed') });
  servers.push(server);
  const a = await textUser(server);
  const b = await textUser(server);
  await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(b, 1)]);

  // Below the threshold nobody is challenged: both got in without the dialog.
  assert.equal(await b.locator('#captcha-dialog').isVisible(), false);
  await report(a);
  await waitState(b, 'left');
  await nextShowsChallenge(b);
  console.log(`screenshot: ${await screenshot(b, 'captcha-challenge')}`);

  // A refused token: 403 captcha_invalid, a clear message, the challenge again.
  const [bad] = await Promise.all([sessionAnswer(b), b.click('#fake-captcha-fail')]);
  assert.equal(bad.status(), 403);
  assert.equal((await bad.json()).code, 'captcha_invalid');
  await b.locator('#captcha-error').waitFor({ state: 'visible' });
  assert.match(await b.textContent('#captcha-error'), /not solved|expired/i);
  await b.locator('#fake-captcha-solve').waitFor({ state: 'visible' });

  // A solved token: the new session is created and B queues again.
  const [good] = await Promise.all([sessionAnswer(b), b.click('#fake-captcha-solve')]);
  assert.equal(good.status(), 200, `solved challenge answered ${good.status()}: ${await good.text().catch(() => '')}`);
  await waitGotIn(b);
  await b.locator('#captcha-dialog').waitFor({ state: 'hidden' });
  const checked = fake.verifications.filter((v) => !v.down);
  assert.deepEqual(checked.map((v) => v.response), [BAD_TOKEN, GOOD_TOKEN], 'each token was checked with the verifier');
  assert.ok(checked.every((v) => v.secret === SECRET && v.remoteip === '127.0.0.1'), 'secret and remote IP were sent');

  // Verifier down, fail closed: C (reported by whoever it meets) cannot get in, and is told why.
  const c = await textUser(server);
  await waitMatchedCount(c, 1);
  const cPairing = await c.evaluate(() => window.duet.pairingId);
  const partner = (await a.evaluate(() => window.duet.pairingId)) === cPairing ? a : b;
  await report(partner);
  await waitState(c, 'left');
  fake.setDown(true);
  await nextShowsChallenge(c);
  const [down] = await Promise.all([sessionAnswer(c), c.click('#fake-captcha-solve')]);
  assert.equal(down.status(), 503);
  assert.equal((await down.json()).code, 'captcha_unavailable');
  await c.waitForFunction(() => window.duet.lastError && window.duet.lastError.code === 'captcha_unavailable');
  assert.match(await c.textContent('#status'), /cannot be checked right now/i);
  assert.notEqual(await c.evaluate(() => window.duet.state), 'queued', 'C is kept out while the verifier is down');

  // The provider is back: the page asks again and the visitor gets in.
  fake.setDown(false);
  await c.locator('#fake-captcha-solve').waitFor({ state: 'visible', timeout: 20000 });
  await c.click('#fake-captcha-solve');
  await waitGotIn(c);
});

test('fail open: with the verifier down, a challenged visitor is let in', async () => {
  const server = await startDuet({ name: 'captcha-open', args: captchaArgs('open') });
  servers.push(server);
  fake.setDown(false);
  const d = await textUser(server);
  const e = await textUser(server);
  await Promise.all([waitMatchedCount(d, 1), waitMatchedCount(e, 1)]);
  await report(d);
  await waitState(e, 'left');
  fake.setDown(true);
  await nextShowsChallenge(e);
  const [resp] = await Promise.all([sessionAnswer(e), e.click('#fake-captcha-solve')]);
  assert.equal(resp.status(), 200, 'the session is created although the verifier is down');
  await waitGotIn(e);
  fake.setDown(false);
});

test('the pages raised no script errors and no Content-Security-Policy refusals', () => {
  assert.deepEqual(consoleProblems(), []);
});
