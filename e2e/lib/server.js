// Starts the real server (`duet up`) for a test file, on ports it picks
// itself (port 0), and reads its one `duet ready {…}` line.
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, createWriteStream, existsSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { artifactsDir, repoRoot } from './paths.js';

/** An RFC 3339 time with up to nanoseconds (tracing's JSON `timestamp`) as Unix milliseconds with a fraction. */
export function unixMs(rfc3339) {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(rfc3339);
  if (!m) return NaN;
  const frac = m[2] ? Number(`0.${m[2]}`) * 1000 : 0;
  return Date.parse(`${m[1]}${m[3]}`) + frac;
}

export function duetBin() {
  return resolve(process.env.DUET_BIN || join(repoRoot, 'target', 'debug', 'duet'));
}

/**
 * @param {object} [o]
 * @param {string} [o.name]         used for the log file name
 * @param {string} [o.ip]           address every listener binds (default 127.0.0.1)
 * @param {string} [o.netns]        run inside this network namespace (`ip netns exec`)
 * @param {string[]} [o.args]       extra flags for `duet up`
 * @param {boolean} [o.rateLimits]  keep the server's rate limits on (default: off, tests make many sessions)
 * @param {string} [o.log]          RUST_LOG for the server (default: info, or the environment's)
 * @param {number} [o.readyTimeoutMs]
 */
export async function startDuet(o = {}) {
  const ip = o.ip || '127.0.0.1';
  const name = o.name || 'duet';
  const dataDir = mkdtempSync(join(tmpdir(), 'duet-e2e-'));
  const args = [
    'up',
    '--http-listen', `${ip}:0`,
    '--internal-listen', '127.0.0.1:0',
    '--metrics-listen', '127.0.0.1:0',
    '--media-listen', `${ip}:0`,
    '--turn-listen-udp', `${ip}:0`,
    '--turn-listen-tcp', `${ip}:0`,
    '--turn-listen-tls', `${ip}:0`,
    '--data-dir', dataDir,
    ...(o.rateLimits ? [] : ['--rate-limits', 'off']),
    '--log-format', 'json',
    ...(o.ip ? ['--public-ip', ip] : []),
    ...(o.args || []),
  ];
  const bin = duetBin();
  if (!existsSync(bin)) throw new Error(`duet binary not found at ${bin} (build it with \`cargo build -p duet\` or set DUET_BIN)`);
  const [cmd, cmdArgs] = o.netns ? ['ip', ['netns', 'exec', o.netns, bin, ...args]] : [bin, args];
  mkdirSync(join(artifactsDir, 'logs'), { recursive: true });
  const logPath = join(artifactsDir, 'logs', `${name}.log`);
  const logFile = createWriteStream(logPath);
  logFile.write(`$ ${cmd} ${cmdArgs.join(' ')}\n`);
  // Only what we pass: a developer's DUET_* variables must not change the test server.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DUET_')));
  env.RUST_LOG = o.log || env.RUST_LOG || 'info';
  const child = spawn(cmd, cmdArgs, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stderr.pipe(logFile, { end: false });
  let exited = null;
  const exitPromise = new Promise((res) => child.on('exit', (code, sig) => { exited = { code, sig }; res(exited); }));

  const ready = await new Promise((res, rej) => {
    let buf = '';
    const timer = setTimeout(() => rej(new Error(`duet up did not print "duet ready" within ${o.readyTimeoutMs || 30000} ms; log: ${logPath}`)), o.readyTimeoutMs || 30000);
    child.stdout.on('data', (d) => {
      logFile.write(d);
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        const m = line.match(/^duet ready (\{.*\})$/);
        if (m) {
          clearTimeout(timer);
          try { res(JSON.parse(m[1])); } catch (e) { rej(new Error(`bad ready line: ${line}`)); }
        }
      }
    });
    exitPromise.then((x) => { clearTimeout(timer); rej(new Error(`duet up exited (${JSON.stringify(x)}) before it was ready; log: ${logPath}`)); });
  });
  const server = {
    ready,
    base: `http://${ready.http}/`,
    dataDir,
    logPath,
    child,
    get exited() { return exited; },
    /**
     * The server's timing events so far (target `duet::timing`, logged at debug level: start the
     * server with `log: 'info,duet::timing=debug'`): [{at (Unix ms), message, ...fields}].
     */
    timingEvents() {
      const out = [];
      for (const line of readFileSync(logPath, 'utf8').split('\n')) {
        if (!line.includes('"duet::timing"')) continue;
        let j;
        try { j = JSON.parse(line); } catch { continue; }
        if (j.target !== 'duet::timing') continue;
        out.push({ at: unixMs(j.timestamp), ...j.fields });
      }
      return out;
    },
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const t = setTimeout(() => { if (!exited) child.kill('SIGKILL'); }, 8000);
        await exitPromise;
        clearTimeout(t);
      }
      logFile.end();
      try { rmSync(dataDir, { recursive: true, force: true }); } catch { /* best effort */ }
    },
  };
  // Keep draining stdout after the ready line.
  child.stdout.on('data', () => {});
  return server;
}
