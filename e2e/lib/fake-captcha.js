// A local stand-in for a challenge provider: the widget script (a
// `turnstile` global whose `render` shows two buttons, one giving a token the
// verifier accepts and one giving a token it refuses) and a `siteverify`
// endpoint speaking the Turnstile/hCaptcha protocol (form POST of secret,
// response, remoteip; JSON {success, error-codes}). `setDown(true)` makes
// siteverify answer 503, as a provider outage would.
import http from 'node:http';

export const GOOD_TOKEN = 'fake-solved-token';
export const BAD_TOKEN = 'fake-unsolved-token';

const WIDGET = `
window.turnstile = {
  render(el, opts) {
    const mk = (label, token, id) => {
      const b = document.createElement('button');
      b.type = 'button'; b.textContent = label; b.id = id; b.className = 'btn';
      b.addEventListener('click', () => opts.callback(token));
      el.appendChild(b);
    };
    el.dataset.sitekey = opts.sitekey;
    mk('I am human', ${JSON.stringify(GOOD_TOKEN)}, 'fake-captcha-solve');
    mk('Fail the challenge', ${JSON.stringify(BAD_TOKEN)}, 'fake-captcha-fail');
    return 'widget-1';
  },
};`;

export async function startFakeCaptcha({ secret }) {
  let down = false;
  const verifications = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (req.method === 'GET' && url.pathname === '/api.js') {
      res.writeHead(200, { 'content-type': 'text/javascript', 'access-control-allow-origin': '*' });
      res.end(WIDGET);
      return;
    }
    if (req.method === 'POST' && url.pathname === '/siteverify') {
      let body = '';
      req.on('data', (d) => { body += d; });
      req.on('end', () => {
        const form = new URLSearchParams(body);
        verifications.push({ secret: form.get('secret'), response: form.get('response'), remoteip: form.get('remoteip'), down });
        if (down) {
          res.writeHead(503, { 'content-type': 'text/plain' });
          res.end('unavailable');
          return;
        }
        const codes = [];
        if (form.get('secret') !== secret) codes.push('invalid-input-secret');
        if (form.get('response') !== GOOD_TOKEN) codes.push('invalid-input-response');
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ success: codes.length === 0, 'error-codes': codes }));
      });
      return;
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    scriptUrl: `${base}/api.js`,
    verifyUrl: `${base}/siteverify`,
    verifications,
    setDown(v) { down = v; },
    close: () => new Promise((r) => server.close(r)),
  };
}
