// Lining up a page's marks and the server's timing events on one clock,
// and the figures the suite prints (no timing assertions: see docs/benchmarks.md).

/** The p-th percentile (0..100) of xs, nearest rank; NaN for none. */
export function percentile(xs, p) {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  const rank = Math.max(1, Math.ceil((p / 100) * s.length));
  return s[rank - 1];
}

/** `performance.timeOrigin` of a page: page time t is Unix ms `origin + t` (same machine, same clock). */
export function timeOrigin(page) {
  return page.evaluate(() => performance.timeOrigin);
}

/** The first event after `from` (Unix ms) that `pred` accepts, or null. */
export function firstEvent(events, from, pred) {
  return events.find((e) => e.at >= from && pred(e)) || null;
}

const fmt = (x) => (Number.isFinite(x) ? x.toFixed(0) : '–');

/**
 * A markdown table of stages: rows = [[label, [ms per run …]], …], each value measured from the run's
 * start. Prints p50 and p95 and how many runs had the stage.
 */
export function stageTable(rows) {
  const lines = ['| stage | p50 ms | p95 ms | runs |', '|---|---:|---:|---:|'];
  for (const [label, xs] of rows) {
    const got = xs.filter((x) => Number.isFinite(x));
    lines.push(`| ${label} | ${fmt(percentile(got, 50))} | ${fmt(percentile(got, 95))} | ${got.length} |`);
  }
  return lines.join('\n');
}

export function summary(xs) {
  const r = xs.map((x) => Math.round(x));
  return `p50=${fmt(percentile(r, 50))} p95=${fmt(percentile(r, 95))} min=${fmt(Math.min(...r))} max=${fmt(Math.max(...r))} n=${r.length}`;
}
