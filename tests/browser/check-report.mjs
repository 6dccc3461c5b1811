// Loads a report.html in Debian's headless chromium (driven by
// playwright-core) and checks what a reader relies on:
//   - the summary ("What to fix first") comes before the first profile section
//   - the plots are there and drawn (latency, memory, CPU by role, worker time)
//   - the CPU, off-CPU and memory flamegraphs start; a click on a frame of
//     the CPU one zooms it to the full width; search works
//   - the page makes no network request and logs no console error
//     (a Content-Security-Policy violation is a console error)
//   - a narrow window does not scroll sideways
// Screenshots go to the artifact directory. Prints one JSON object with
// what it saw; exits 1 listing every failed check.
//
// usage: node check-report.mjs REPORT_HTML ARTIFACT_DIR [PLOT_ID...]

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const [reportPath, artifactDir, ...plotArgs] = process.argv.slice(2);
if (!reportPath || !artifactDir) {
  console.error('usage: node check-report.mjs REPORT_HTML ARTIFACT_DIR [PLOT_ID...]');
  process.exit(2);
}
const plots = plotArgs.length ? plotArgs : ['plot-latency', 'plot-memory', 'plot-cpu-roles', 'plot-worker-time'];
const reportUrl = pathToFileURL(path.resolve(reportPath)).href;
fs.mkdirSync(artifactDir, { recursive: true });

const failures = [];
const check = (ok, what) => {
  if (!ok) failures.push(what);
};
const seen = { requests: [], consoleErrors: [], pageErrors: [] };

// A fresh profile every run: nothing cached, no first-run state.
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'perf-audit-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
  viewport: { width: 1280, height: 900 },
});
try {
  context.on('request', (r) => {
    if (r.url() !== reportUrl) seen.requests.push(r.url());
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on('console', (m) => {
    if (m.type() === 'error') seen.consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => seen.pageErrors.push(String(e)));
  // The flamegraph's "Search" button asks for a term with prompt().
  page.on('dialog', (d) => d.accept(process.env.SEARCH_TERM || 'demo_service'));

  await page.goto(reportUrl, { waitUntil: 'load' });

  // Summary first.
  const order = await page.evaluate(() => {
    const summary = document.querySelector('#summary');
    const firstProfile = document.querySelector('section.profile-section');
    return {
      summary: !!summary,
      firstProfile: firstProfile ? firstProfile.id : null,
      summaryFirst: !!summary && !!firstProfile && !!(summary.compareDocumentPosition(firstProfile) & Node.DOCUMENT_POSITION_FOLLOWING),
      baselineAfterSummary: !!summary && !!document.querySelector('#baseline') &&
        !!(summary.compareDocumentPosition(document.querySelector('#baseline')) & Node.DOCUMENT_POSITION_FOLLOWING),
      cards: [...document.querySelectorAll('#summary .card')].map((c) => ({
        title: c.querySelector('h3')?.textContent.trim(),
        where: c.querySelector('.where')?.textContent.trim(),
        link: c.querySelector('.more a')?.getAttribute('href'),
        linkTargetExists: !!document.querySelector(c.querySelector('.more a')?.getAttribute('href') || '#none'),
      })),
      summaryTop: summary ? summary.getBoundingClientRect().top : null,
    };
  });
  seen.order = order;
  check(order.summaryFirst, `the summary is not before the first profile section (${order.firstProfile})`);
  check(order.baselineAfterSummary, 'the baseline does not follow the summary');
  check(order.cards.length > 0, 'no P0/P1 card in the summary');
  check(order.cards.every((c) => c.linkTargetExists), 'a card links to a missing section');
  check(order.summaryTop !== null && order.summaryTop < 900, 'the summary is not on the first screen');
  await page.screenshot({ path: path.join(artifactDir, 'report-first-screen.png') });

  // Severities are text badges drawn with CSS, never emoji (which show as
  // empty boxes here: no emoji font in a headless Debian Chromium).
  const marks = await page.evaluate(() => {
    const text = document.body.innerText;
    const emoji = [...text].filter((c) => {
      const u = c.codePointAt(0);
      return u > 0xffff || (u >= 0x2300 && u <= 0x23ff) || (u >= 0x25a0 && u <= 0x27bf) || (u >= 0x2b00 && u <= 0x2bff) || (u >= 0xfe00 && u <= 0xfe0f);
    });
    const badges = [...document.querySelectorAll('.badge')].map((b) => ({ text: b.textContent.trim(), bg: getComputedStyle(b).backgroundColor }));
    return { emoji: emoji.slice(0, 5), badges };
  });
  seen.severityMarks = marks;
  check(marks.emoji.length === 0, `emoji in the page: ${JSON.stringify(marks.emoji)}`);
  check(marks.badges.some((b) => /^P[012]$/.test(b.text)), 'no severity badge in the page');
  check(marks.badges.every((b) => b.text.length > 0 && b.bg !== 'rgba(0, 0, 0, 0)'), `a badge without text or colour: ${JSON.stringify(marks.badges.slice(0, 5))}`);

  // Plots, drawn with a size.
  seen.plots = {};
  for (const id of plots) {
    const box = await page.evaluate((id) => {
      const svg = document.querySelector(`#${id} svg`);
      if (!svg) return null;
      const r = svg.getBoundingClientRect();
      return { width: r.width, height: r.height, marks: svg.querySelectorAll('polyline, path, rect, circle').length };
    }, id);
    seen.plots[id] = box;
    check(box && box.width > 200 && box.height > 100 && box.marks > 3, `plot ${id} missing or empty: ${JSON.stringify(box)}`);
  }

  // Every flamegraph started (inferno's init ran: the frames fill the width).
  seen.flamegraphs = {};
  for (const handle of await page.$$('iframe.flamegraph')) {
    await handle.scrollIntoViewIfNeeded();
    const id = await handle.evaluate((f) => f.closest('figure').id);
    const f = await handle.contentFrame();
    await f.waitForSelector('#frames > g');
    // Drawn at the frame's width once laid out (a reader sees it scrolled
    // into view); give it a moment.
    await f
      .waitForFunction(() => document.querySelector('#frames').getBoundingClientRect().width > document.documentElement.clientWidth * 0.9, null, { timeout: 3000 })
      .catch(() => {});
    seen.flamegraphs[id] = await f.evaluate(() => ({
      frames: document.querySelectorAll('#frames > g').length,
      width: document.querySelector('#frames').getBoundingClientRect().width,
      page: document.documentElement.clientWidth,
    }));
    const g = seen.flamegraphs[id];
    check(g.frames > 1 && g.width > g.page * 0.9, `flamegraph ${id} did not start: ${JSON.stringify(g)}`);
  }
  for (const id of ['flamegraph-cpu', 'flamegraph-async', 'flamegraph-memory']) {
    check(seen.flamegraphs[id], `flamegraph ${id} missing`);
  }

  // Flamegraph: click a frame, it becomes the full width.
  const iframe = await page.waitForSelector('#flamegraph-cpu iframe');
  await iframe.scrollIntoViewIfNeeded();
  const frame = await iframe.contentFrame();
  await frame.waitForSelector('#frames > g');
  await frame.waitForTimeout(200); // init() finishes in a setTimeout
  const target = await frame.evaluate(() => {
    const frames = document.querySelector('#frames');
    const full = frames.getBoundingClientRect().width;
    let best = null;
    document.querySelectorAll('#frames > g').forEach((g, i) => {
      const w = g.querySelector('rect').getBoundingClientRect().width;
      // A frame narrow enough to zoom into, wide enough to click.
      if (w > 30 && w < full * 0.6 && (!best || w > best.width)) best = { index: i + 1, width: w, name: g.querySelector('title')?.textContent };
    });
    return { full, best, count: frames.children.length };
  });
  seen.flamegraph = { before: target };
  check(target.best, `no frame to click in the CPU flamegraph (${target.count} frames)`);
  if (target.best) {
    // Where a reader clicks: the frame (its box or its label).
    await frame.click(`#frames > g:nth-child(${target.best.index})`);
    await frame.waitForTimeout(300);
    const after = await frame.evaluate((index) => {
      const g = document.querySelector(`#frames > g:nth-child(${index})`);
      return {
        width: g.querySelector('rect').getBoundingClientRect().width,
        full: document.querySelector('#frames').getBoundingClientRect().width,
        hidden: document.querySelectorAll('#frames > g.hide').length,
        resetShown: !document.querySelector('#unzoom').classList.contains('hide'),
      };
    }, target.best.index);
    seen.flamegraph.after = after;
    check(after.width > after.full * 0.95, `the clicked frame did not zoom to the full width: ${JSON.stringify(after)}`);
    check(after.hidden > 0 || after.resetShown, 'zooming changed no other frame');
    await iframe.screenshot({ path: path.join(artifactDir, 'flamegraph-zoomed.png') });
    // Back to the whole graph, then search through the button (the prompt
    // is answered above).
    await frame.click('#unzoom');
    await frame.waitForTimeout(200);
    await frame.click('#search');
    await frame.waitForTimeout(200);
    seen.flamegraph.matched = await frame.evaluate(() => document.querySelector('#matched').textContent);
    check(/Matched/.test(seen.flamegraph.matched), `search matched nothing: "${seen.flamegraph.matched}"`);
  }

  // A narrow window: no sideways scrolling of the page itself.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.waitForTimeout(200);
  seen.narrow = await page.evaluate(() => ({ scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth }));
  check(seen.narrow.scrollWidth <= seen.narrow.innerWidth + 1, `the page scrolls sideways at 390 px: ${JSON.stringify(seen.narrow)}`);
  await page.screenshot({ path: path.join(artifactDir, 'report-narrow.png') });

  // Resources the page fetched, as the browser counts them.
  seen.resourceEntries = await page.evaluate(() => performance.getEntriesByType('resource').map((e) => e.name));
} catch (e) {
  failures.push(`the check stopped: ${e.message.split('\n')[0]}`);
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}

check(seen.requests.length === 0, `network requests: ${seen.requests.join(', ')}`);
check(!seen.resourceEntries || seen.resourceEntries.length === 0, `resources fetched: ${(seen.resourceEntries || []).join(', ')}`);
check(seen.consoleErrors.length === 0, `console errors: ${seen.consoleErrors.join(' | ')}`);
check(seen.pageErrors.length === 0, `page errors: ${seen.pageErrors.join(' | ')}`);
console.log(JSON.stringify({ ok: failures.length === 0, failures, seen }, null, 2));
process.exit(failures.length === 0 ? 0 : 1);
