// Accessibility audit with axe-core (npm), run inside the page: every screen
// is checked at a desktop and a phone viewport, in the dark and the light
// colour scheme, against the WCAG 2.0/2.1 A and AA rules. The pages' CSP
// (script-src 'self') would refuse the injected script, so audited pages are
// opened in contexts made with `bypassCSP: true` (other files check the CSP).
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const AXE_PATH = require.resolve('axe-core/axe.min.js');

export const WCAG_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'];
export const VIEWPORTS = { desktop: { width: 1280, height: 800 }, phone: { width: 390, height: 844 } };
export const SCHEMES = ['dark', 'light'];
/** Context options an audited page needs. */
export const AUDIT_CONTEXT = { bypassCSP: true };

/** Lets layout settle: two frames, then every running CSS transition (hover fades) has ended. */
function settled(page) {
  return page.evaluate(async () => {
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    await Promise.all(document.getAnimations().filter((a) => a instanceof CSSTransition).map((a) => a.finished.catch(() => {})));
  });
}

async function runAxe(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.addScriptTag({ path: AXE_PATH });
  return page.evaluate(async (tags) => {
    const r = await window.axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
    const ids = (xs) => xs.map((x) => x.id);
    return {
      rules: [...ids(r.passes), ...ids(r.violations), ...ids(r.incomplete), ...ids(r.inapplicable)],
      applied: [...ids(r.passes), ...ids(r.violations)],
      violations: r.violations.map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        nodes: v.nodes.slice(0, 6).map((n) => ({ target: n.target.join(' '), summary: n.failureSummary })),
      })),
    };
  }, WCAG_TAGS);
}

/** Collects the results of every screen checked; `summary()` for the end. */
export class Audit {
  constructor() {
    this.screens = new Set();
    this.runs = 0;
    this.rules = new Set();
    this.applied = new Set();
    this.violations = [];
  }

  /** Checks `page` as it is now, under every viewport and colour scheme; restores both afterwards. */
  async check(page, screen) {
    this.screens.add(screen);
    const size = page.viewportSize();
    // No hover left over from the last click: the colours are the resting ones.
    await page.mouse.move(0, 0);
    try {
      for (const [vp, viewport] of Object.entries(VIEWPORTS)) {
        await page.setViewportSize(viewport);
        for (const scheme of SCHEMES) {
          await page.emulateMedia({ colorScheme: scheme });
          await settled(page);
          const r = await runAxe(page);
          this.runs++;
          for (const id of r.rules) this.rules.add(id);
          for (const id of r.applied) this.applied.add(id);
          for (const v of r.violations) this.violations.push({ screen, viewport: vp, scheme, ...v });
        }
      }
    } finally {
      await page.setViewportSize(size);
      await page.emulateMedia({ colorScheme: null });
    }
  }

  summary() {
    return `axe-core ${this.screens.size} screens × ${Object.keys(VIEWPORTS).length} viewports × ${SCHEMES.length} colour schemes `
      + `= ${this.runs} runs; ${this.rules.size} WCAG 2.1 A/AA rules checked (${this.applied.size} applied); `
      + `${this.violations.length} violations`;
  }

  /** One line per violation and screen, for the failure message. */
  report() {
    return this.violations.map((v) => `${v.screen} [${v.viewport}, ${v.scheme}] ${v.id} (${v.impact}): ${v.help}\n`
      + v.nodes.map((n) => `    ${n.target}: ${(n.summary || '').replace(/\s+/g, ' ')}`).join('\n')).join('\n');
  }
}
