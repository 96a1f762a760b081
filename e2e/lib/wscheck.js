// The WebSocket contract, checked on every page of the suite: each frame a
// page sends or receives on signaling `/ws` and on the SFU's `/sfu/ws` is
// validated (ajv, JSON Schema 2020-12) against the schema the server under
// test publishes at `/api/ws.schema.json` — `ClientMsg`/`ServerMsg` on
// `/ws`, `SfuClientMsg`/`SfuServerMsg` on `/sfu/ws`. A frame that does not
// match fails the running test (a hook after each test, and one after the
// file for frames seen after the last test), naming the socket, the
// direction, the message and ajv's errors.
import Ajv2020Module from 'ajv/dist/2020.js';
import { afterEach, after } from 'node:test';

const Ajv2020 = Ajv2020Module.default || Ajv2020Module;

/** Socket path -> [definition of what the page sends, of what it receives]. */
const DEFS = { '/ws': ['ClientMsg', 'ServerMsg'], '/sfu/ws': ['SfuClientMsg', 'SfuServerMsg'] };

// schemars' integer and float formats, checked for what they say (ajv knows
// only the string formats of the specification).
const INT_RANGES = {
  int8: [-(2 ** 7), 2 ** 7 - 1],
  int16: [-(2 ** 15), 2 ** 15 - 1],
  int32: [-(2 ** 31), 2 ** 31 - 1],
  int64: [-(2 ** 63), 2 ** 63],
  uint8: [0, 2 ** 8 - 1],
  uint16: [0, 2 ** 16 - 1],
  uint32: [0, 2 ** 32 - 1],
  uint64: [0, 2 ** 64],
  uint: [0, 2 ** 64],
  int: [-(2 ** 63), 2 ** 63],
};

function compile(schema) {
  const ajv = new Ajv2020({ allErrors: true, strict: true, strictTypes: false });
  for (const [name, [lo, hi]] of Object.entries(INT_RANGES)) {
    ajv.addFormat(name, { type: 'number', validate: (n) => Number.isInteger(n) && n >= lo && n <= hi });
  }
  ajv.addFormat('double', { type: 'number', validate: (n) => Number.isFinite(n) });
  ajv.addFormat('float', { type: 'number', validate: (n) => Number.isFinite(n) });
  ajv.addSchema(schema);
  const id = schema.$id;
  const validators = {};
  for (const name of Object.values(DEFS).flat()) {
    if (!schema.$defs || !schema.$defs[name]) throw new Error(`ws schema: no definition ${name}`);
    validators[name] = ajv.compile({ $ref: `${id}#/$defs/${name}` });
  }
  return { validators, errorsText: (errors) => ajv.errorsText(errors, { separator: '; ' }) };
}

async function fetchSchema(url, page) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    if (!res.ok) throw new Error(`GET ${url} answered ${res.status}`);
    return await res.json();
  } catch (e) {
    // A server inside a network namespace: only the browser in there reaches it.
    if (!page) throw e;
    return page.evaluate(async (u) => {
      const res = await fetch(u);
      if (!res.ok) throw new Error(`GET ${u} answered ${res.status}`);
      return res.json();
    }, url);
  }
}

const schemas = new Map(); // origin -> Promise<compiled>
/** The compiled schema of the server at `base` (fetched once per server; through `page` if need be). */
export function schemaOf(base, page) {
  const origin = new URL(base).origin;
  if (!schemas.has(origin)) {
    const loading = fetchSchema(new URL('/api/ws.schema.json', origin).href, page).then(compile);
    // A failed fetch is reported once per frame, and tried again for the next page.
    loading.catch(() => schemas.delete(origin));
    schemas.set(origin, loading);
  }
  return schemas.get(origin);
}

const violations = [];
const pending = new Set();
/** Frames checked so far: `"/ws sent join"` -> count. */
export const checked = new Map();

function short(text) {
  return text.length > 600 ? `${text.slice(0, 600)}… (${text.length} chars)` : text;
}

/**
 * Checks one frame of the socket at `path` (`/ws` or `/sfu/ws`) going
 * `dir` (`sent` by the page or `received`); a violation is kept for the hook.
 * @returns {Promise<string|null>} the violation, or null
 */
export async function checkFrame(base, path, dir, payload, page) {
  const [out, inn] = DEFS[path];
  const def = dir === 'sent' ? out : inn;
  const where = `${path} ${dir} (${def})`;
  let problem = null;
  if (typeof payload !== 'string') {
    problem = `${where}: a binary frame of ${payload.length} bytes (every frame is one JSON object)`;
  } else {
    let msg;
    try {
      msg = JSON.parse(payload);
    } catch (e) {
      problem = `${where}: not JSON (${e.message}): ${short(payload)}`;
    }
    if (!problem) {
      const { validators, errorsText } = await schemaOf(base, page);
      const validate = validators[def];
      if (validate(msg)) {
        const key = `${path} ${dir} ${msg.type}`;
        checked.set(key, (checked.get(key) || 0) + 1);
      } else {
        problem = `${where}: ${errorsText(validate.errors)}\n  message: ${short(payload)}`;
      }
    }
  }
  if (problem) violations.push(problem);
  return problem;
}

/** Checks every `/ws` and `/sfu/ws` frame of `page` against the schema of the server at `base`. */
export function watchSockets(page, base) {
  page.on('websocket', (ws) => {
    const path = new URL(ws.url()).pathname;
    if (!DEFS[path]) return;
    for (const [event, dir] of [['framesent', 'sent'], ['framereceived', 'received']]) {
      ws.on(event, ({ payload }) => {
        const p = checkFrame(base, path, dir, payload, page).catch((e) => {
          violations.push(`${path} ${dir}: could not check against the schema: ${e.message}`);
        });
        pending.add(p);
        p.finally(() => pending.delete(p));
      });
    }
  });
}

/** The violations seen so far, taken out (a test that provokes some on purpose takes them). */
export async function takeViolations() {
  await Promise.all([...pending]);
  return violations.splice(0);
}

async function failOnViolations() {
  const found = await takeViolations();
  if (found.length) {
    throw new Error(`${found.length} WebSocket frame(s) break /api/ws.schema.json:\n${found.join('\n')}`);
  }
}

afterEach(failOnViolations);
after(failOnViolations);
