// Helpers for the moderation pages (`/admin/`): moderator accounts made with
// the real CLI (`duet admin create-moderator --password-stdin`) against the
// test server's SQLite database, and the admin page with its own console
// checks (it has `window.admin` hooks instead of the user page's `window.duet`).
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { duetBin } from './server.js';
import { watchSockets } from './wscheck.js';

/** Runs `duet admin create-moderator` against `server`'s database; resolves to its stdout. */
export function createModerator(server, email, role, password) {
  const db = `sqlite://${join(server.dataDir, 'duet.db')}?mode=rwc`;
  const args = ['admin', 'create-moderator', '--database-url', db, '--email', email, '--role', role, '--password-stdin'];
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DUET_')));
  return new Promise((resolve, reject) => {
    const child = spawn(duetBin(), args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`duet admin create-moderator exited ${code}: ${err}`))));
    child.stdin.end(`${password}\n`);
  });
}

const problems = [];
/** Script errors and CSP refusals seen on admin pages. */
export function adminProblems() {
  return problems.slice();
}

/** Opens `/admin/` in a fresh context and waits for the login screen. */
export async function openAdmin(browser, base, o = {}) {
  const context = await browser.newContext({ viewport: o.viewport || { width: 1440, height: 900 }, ...(o.context || {}) });
  const page = await context.newPage();
  page.consoleLines = [];
  page.on('console', (m) => {
    const line = `${m.type()}: ${m.text()}`;
    page.consoleLines.push(line);
    if (/Content Security Policy|Refused to (execute|apply|load|connect)/i.test(line)) problems.push(line);
  });
  page.on('pageerror', (e) => {
    page.consoleLines.push(`pageerror: ${e.message}`);
    problems.push(`pageerror: ${e.message}`);
  });
  // The watch view's /sfu/ws frames must match the server's WebSocket schema.
  watchSockets(page, base);
  await page.goto(new URL('admin/', base).href, { waitUntil: 'domcontentloaded' });
  await page.waitForFunction(() => window.admin && window.admin.state === 'login');
  return page;
}

export async function login(page, email, password) {
  await page.fill('#login-email', email);
  await page.fill('#login-password', password);
  await page.click('#login-btn');
  await page.waitForFunction(() => window.admin.state === 'in', null, { timeout: 15000 });
}

/** Goes to a view (`#/name`) and waits until it has rendered. */
export async function view(page, hash) {
  await page.evaluate(() => { window.admin.ready = null; });
  await page.evaluate((h) => { location.hash = h; }, hash);
  const name = hash.split('/')[1];
  await page.waitForFunction((n) => window.admin.ready === n, name, { timeout: 15000 });
}

/** Video inbound-rtp stats of the watcher's peer connection. */
export async function watchStats(page) {
  return page.evaluate(async () => {
    const pc = window.admin.watch.pc;
    if (!pc) return null;
    const r = await pc.getStats();
    const video = [];
    const audio = [];
    r.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') video.push({ mid: s.mid, framesDecoded: s.framesDecoded || 0, frameWidth: s.frameWidth || 0 });
      if (s.type === 'inbound-rtp' && s.kind === 'audio') audio.push({ mid: s.mid, packetsReceived: s.packetsReceived || 0 });
    });
    return { state: pc.connectionState, video, audio };
  });
}
