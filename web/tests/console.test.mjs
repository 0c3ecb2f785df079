// The console in a real browser (Playwright driving Debian's Chromium) against a running
// `scripts/dev`: sign in, a device and its key shown once, readings in the chart and the latest
// values, a rule with a 422 next to its field, an alert raised by a pass and acknowledged, a
// channel test with its delivery result, silences, CSV, and a second user who sees none of it.
// Screenshots of the main pages, desktop and phone, go to target/web-screenshots/.
//
//   CONSOLE_URL=http://localhost:9001 API_URL=http://localhost:9000 npm test
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdir, readFile } from 'node:fs/promises';
import { chromium } from 'playwright-core';

const CONSOLE = process.env.CONSOLE_URL ?? 'http://localhost:9001';
const API = process.env.API_URL ?? 'http://localhost:9000';
const SHOTS = new URL('../../target/web-screenshots/', import.meta.url);
const run = Math.random().toString(36).slice(2, 8);
const owner = `user_web_${run}`;

let browser;
let receiver;
const received = [];

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      received.push({ headers: req.headers, body });
      res.writeHead(204).end();
    });
  });
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  await mkdir(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  receiver?.close();
});

async function signIn(user, viewport = { width: 1280, height: 860 }) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(error.message));
  await page.goto(CONSOLE);
  await page.getByLabel('User id').fill(user);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Devices', level: 1 }).waitFor();
  return { context, page, problems };
}

/** A JSON POST to the API under the console's origin, as a user (token) or a device (key). */
const postJson = (path, bearer, body) => fetch(`${CONSOLE}${path}`, {
  method: 'POST',
  headers: { Authorization: `Bearer ${bearer}`, 'Content-Type': 'application/json' },
  body: JSON.stringify(body),
});

const shot = (page, name) => page.screenshot({ path: new URL(`${name}.png`, SHOTS).pathname, fullPage: true });

// Minutes ago → the readings a device sends; the values are what the chart must hold.
const minutesAgo = (m) => new Date(Date.now() - m * 60_000).toISOString().replace(/\.\d+Z$/, '.000Z');
const temperatures = [['19.5', 50], ['20.25', 40], ['21.125', 30], ['22', 20], ['23.25', 10]];

const state = {};

test('a user signs in, registers a device and sees its key once', async () => {
  const { context, page, problems } = await signIn(owner);
  await page.getByText('No devices yet').waitFor();
  await page.getByLabel('Name').fill('Greenhouse');
  await page.getByRole('button', { name: 'Register' }).click();
  const key = await page.getByTestId('device-key').textContent();
  assert.match(key, /^dk_[a-z2-7]{32}$/);
  await page.getByText('Shown this once.').waitFor();
  await page.getByRole('link', { name: 'Greenhouse' }).waitFor();
  state.key = key;
  state.deviceId = (await page.getByRole('link', { name: 'Greenhouse' }).getAttribute('href')).split('/').pop();
  await page.reload();
  await page.getByRole('link', { name: 'Greenhouse' }).waitFor();
  assert.equal(await page.getByTestId('device-key').count(), 0, 'the key is not shown again');
  assert.deepEqual(problems, []);
  await context.close();
});

test('readings sent with the key appear in the latest values and the chart', async () => {
  const readings = [
    ...temperatures.map(([value, m]) => ({ metric: 'temperature', value, recorded_at: minutesAgo(m) })),
    { metric: 'humidity', value: '40.125', recorded_at: minutesAgo(10) },
  ];
  const sent = await postJson('/v1/ingest', state.key, { readings });
  assert.equal(sent.status, 200, await sent.text());

  const { context, page, problems } = await signIn(owner);
  await page.getByRole('link', { name: 'Greenhouse' }).click();
  const latest = page.getByTestId('latest');
  await latest.waitFor();
  assert.match(await latest.textContent(), /temperature\s*23\.25/);
  assert.match(await latest.textContent(), /humidity\s*40\.125/);

  await page.getByRole('radio', { name: '1 h' }).click();
  const figure = page.locator('figure[data-metric="temperature"][data-points]');
  await page.waitForFunction(() => document.querySelector('figure[data-metric="temperature"]')?.chartData?.bucket === '1m');
  const data = await figure.evaluate((el) => el.chartData);
  assert.equal(data.count.reduce((a, b) => a + b, 0), temperatures.length);
  assert.deepEqual(data.avg.map(Number), temperatures.map(([v]) => Number(v)));
  assert.deepEqual(data.min, data.max, 'one reading per minute bucket');
  assert.equal(await page.locator('figure[data-metric="temperature"] canvas').count() > 0, true);

  await page.getByRole('radio', { name: '24 h' }).click();
  await page.waitForFunction(() => document.querySelector('figure[data-metric="temperature"]')?.chartData?.bucket === '15m');
  const day = await figure.evaluate((el) => el.chartData);
  assert.equal(day.count.reduce((a, b) => a + b, 0), temperatures.length);
  assert.equal(day.max.map(Number).reduce((a, b) => Math.max(a, b)), 23.25);
  assert.equal(day.min.map(Number).reduce((a, b) => Math.min(a, b)), 19.5);

  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download CSV' }).click()]);
  const csv = (await readFile(await download.path(), 'utf8')).trim().split(/\r?\n/);
  assert.equal(csv[0], 'metric,value,recorded_at');
  assert.equal(csv.length, 1 + readings.length);
  assert.ok(csv.some((line) => line.startsWith('humidity,40.125,')));
  assert.equal(csv.filter((line) => line.startsWith('temperature,')).length, temperatures.length);
  assert.deepEqual(problems, []);
  await context.close();
});

test('a rule is created in the editor, with a 422 shown next to its field first', async () => {
  const { context, page, problems } = await signIn(owner);
  await page.goto(`${CONSOLE}/#/devices/${state.deviceId}`);
  await page.getByText('No rules.').waitFor();
  await page.getByLabel('Metric').fill('temperature');
  await page.getByLabel('Condition').selectOption('gt');
  await page.getByLabel('Threshold').fill('20');
  await page.getByLabel('Clears at (optional)').fill('25');
  await page.getByRole('button', { name: 'Add rule' }).click();
  const clear = page.locator('input[name="clear_threshold"]');
  const error = page.locator(`#${await clear.getAttribute('id')}-error`);
  await error.waitFor();
  assert.match(await error.textContent(), /clear_threshold/);
  assert.equal(await clear.getAttribute('aria-invalid'), 'true');
  assert.equal(await page.getByTestId('rules').count(), 0, 'nothing was created');

  await clear.fill('19');
  await page.getByRole('button', { name: 'Add rule' }).click();
  await page.getByTestId('rules').getByText('temperature > 20, clears at 19').waitFor();
  assert.equal(await clear.getAttribute('aria-invalid'), null);
  await shot(page, 'device-desktop');
  assert.deepEqual(problems, []);
  await context.close();
});

test('an alert raised by a pass shows, is acknowledged, and stays acknowledged', async () => {
  const event = await readFile(new URL('../../events/alert-eval-schedule.json', import.meta.url));
  const pass = await fetch(`${API}/2015-03-31/functions/alert-eval/invocations`, { method: 'POST', body: event });
  assert.equal(pass.status, 200);
  const summary = await pass.json();
  assert.ok(summary.fired >= 1, JSON.stringify(summary));

  const { context, page, problems } = await signIn(owner);
  await page.getByRole('link', { name: 'Alerts' }).click();
  const firing = page.getByTestId('alerts-firing');
  await firing.getByText('Greenhouse · temperature = 23.25').waitFor();
  await firing.getByText('Acknowledge…').click();
  await firing.getByLabel('Comment (optional)').fill('Opened the vents');
  await firing.getByRole('button', { name: 'Acknowledge' }).click();
  await firing.getByTestId('acknowledged').waitFor();
  await page.reload();
  const acknowledged = page.getByTestId('alerts-firing').getByTestId('acknowledged');
  await acknowledged.waitFor();
  assert.match(await acknowledged.textContent(), new RegExp(`by ${owner}: .*Opened the vents`));
  await shot(page, 'alerts-desktop');
  assert.deepEqual(problems, []);
  await context.close();
});

test('a channel test shows its delivery result, and the delivery log lists it', async () => {
  const { context, page, problems } = await signIn(owner);
  await page.getByRole('link', { name: 'Channels' }).click();
  await page.getByText('No channels yet').waitFor();
  await page.getByLabel('Name').fill('Ops hook');
  await page.getByLabel('Type').selectOption('webhook');
  await page.getByLabel('URL (https)').fill(`http://127.0.0.1:${receiver.address().port}/hook`);
  await page.getByRole('button', { name: 'Add channel' }).click();
  await page.getByText('The signing secret of Ops hook').waitFor();
  const channel = page.getByTestId('channels').locator('li').first();
  await channel.getByRole('button', { name: 'Send test' }).click();
  const result = channel.getByTestId('delivery-result');
  await result.waitFor();
  assert.equal(await result.getAttribute('data-status'), 'delivered');
  assert.equal(received.length, 1);
  assert.equal(JSON.parse(received[0].body).type, 'test');
  assert.ok(received[0].headers['webhook-signature']?.startsWith('v1,'));
  await shot(page, 'channels-desktop');

  await channel.getByRole('link', { name: 'Deliveries' }).click();
  const log = page.getByTestId('deliveries');
  await log.waitFor();
  assert.match(await log.textContent(), /test\s*delivered/);
  assert.deepEqual(problems, []);
  await context.close();
});

test('silences: a maintenance window in a zone and a one-off silence', async () => {
  const { context, page, problems } = await signIn(owner);
  await page.getByRole('link', { name: 'Silences' }).click();
  await page.getByText('No silences').waitFor();
  await page.getByLabel('Kind').selectOption('window');
  await page.getByLabel('sat').check();
  await page.getByLabel('sun').check();
  await page.getByLabel('From').fill('22:00');
  await page.getByLabel('To', { exact: true }).fill('02:00');
  await page.getByLabel('Time zone').fill('Europe/Berlin');
  await page.getByRole('button', { name: 'Add silence' }).click();
  await page.getByText('All alerts: every sat, sun 22:00–02:00 (Europe/Berlin)').waitFor();

  await page.getByLabel('Kind').selectOption('once');
  await page.getByRole('button', { name: 'Add silence' }).click(); // no end: the API's 422, at its field
  const endsAt = page.locator('input[name="ends_at"]');
  await page.locator(`#${await endsAt.getAttribute('id')}-error`).waitFor();
  await page.getByLabel('Devices').selectOption({ label: 'Greenhouse' });
  await endsAt.fill('2030-01-01T08:00');
  await page.getByRole('button', { name: 'Add silence' }).click();
  await page.getByText(/Greenhouse: from .* until /).waitFor();
  assert.equal(await page.getByTestId('silences').locator('li').count(), 2);
  await shot(page, 'silences-desktop');
  assert.deepEqual(problems, []);
  await context.close();
});

test('phone width: every main page is usable and screenshotted', async () => {
  const { context, page, problems } = await signIn(owner, { width: 390, height: 844 });
  await shot(page, 'devices-phone');
  for (const [hash, ready, name] of [
    [`#/devices/${state.deviceId}`, 'figure[data-metric="temperature"][data-points]', 'device-phone'],
    ['#/alerts', '[data-testid="alerts-firing"]', 'alerts-phone'],
    ['#/channels', '[data-testid="channels"]', 'channels-phone'],
    ['#/silences', '[data-testid="silences"]', 'silences-phone'],
  ]) {
    await page.goto(`${CONSOLE}/${hash}`);
    await page.locator(ready).waitFor();
    const unlabelled = await page.evaluate(() =>
      [...document.querySelectorAll('input, select, textarea, button')]
        .filter((el) => !el.closest('[hidden]') && !(el.labels?.length || el.getAttribute('aria-label') || el.textContent.trim()))
        .map((el) => el.outerHTML));
    assert.deepEqual(unlabelled, [], `${hash}: every control has a label`);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${hash} scrolls sideways by ${overflow}px at phone width`);
    await shot(page, name);
  }
  await page.setViewportSize({ width: 1280, height: 860 });
  await page.goto(`${CONSOLE}/#/devices`);
  await page.getByRole('link', { name: 'Greenhouse' }).waitFor();
  await shot(page, 'devices-desktop');
  // The one in the README (web/screenshots/): a device with a day of readings every 10 minutes,
  // at a laptop's width, the first screen only.
  const token = await (await fetch(`${CONSOLE}/dev/token?user=${owner}`)).text();
  const created = await postJson('/v1/devices', token, { name: 'Cold store' }).then((r) => r.json());
  const day = Array.from({ length: 144 }, (_, i) => i * 10 + 5).flatMap((m, i) => [
    { metric: 'temperature', value: (4 + 1.5 * Math.sin(m / 137) + ((i * 3) % 5) / 8).toFixed(2), recorded_at: minutesAgo(m) },
    { metric: 'humidity', value: (62 + 8 * Math.cos(m / 230)).toFixed(1), recorded_at: minutesAgo(m) },
  ]);
  const sent = await postJson('/v1/ingest', created.device_key, { readings: day });
  assert.equal(sent.status, 200);
  await page.setViewportSize({ width: 1024, height: 760 });
  await page.goto(`${CONSOLE}/#/devices/${created.id}`);
  await page.locator('figure[data-metric="temperature"][data-points]').waitFor();
  await page.locator('section[aria-labelledby="charts-title"]').screenshot({ path: new URL('readme-device.png', SHOTS).pathname });
  assert.deepEqual(problems, []);
  await context.close();
});

test('a device is renamed, its key rotated (shown once), and deleted after a confirmation', async () => {
  const { context, page, problems } = await signIn(owner);
  await page.getByLabel('Name').fill('Spare');
  await page.getByRole('button', { name: 'Register' }).click();
  const firstKey = await page.getByTestId('device-key').textContent();
  await page.getByRole('link', { name: 'Open the device' }).click();
  await page.getByRole('heading', { name: /Spare/, level: 1 }).waitFor();

  await page.getByRole('form', { name: 'Rename' }).getByLabel('Name').fill('Spare sensor');
  await page.getByRole('button', { name: 'Rename' }).click();
  await page.getByRole('heading', { name: /Spare sensor/, level: 1 }).waitFor();

  await page.getByLabel('The current key stops working').selectOption('0');
  await page.getByRole('button', { name: 'Rotate key' }).click();
  const secondKey = await page.getByTestId('device-key').textContent();
  assert.match(secondKey, /^dk_[a-z2-7]{32}$/);
  assert.notEqual(secondKey, firstKey);
  const ingest = (key) => postJson('/v1/ingest', key, { readings: [{ metric: 'x', value: 1 }] });
  assert.equal((await ingest(firstKey)).status, 401, 'the old key ended at once');
  assert.equal((await ingest(secondKey)).status, 200);

  await page.getByRole('button', { name: 'Delete device…' }).click();
  const dialog = page.getByRole('dialog', { name: 'Delete Spare sensor?' });
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  assert.equal(await dialog.count(), 0);
  await page.getByRole('heading', { name: /Spare sensor/, level: 1 }).waitFor();
  await page.getByRole('button', { name: 'Delete device…' }).click();
  await dialog.getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('heading', { name: 'Devices', level: 1 }).waitFor();
  await page.getByRole('link', { name: 'Greenhouse' }).waitFor();
  assert.equal(await page.getByRole('link', { name: 'Spare sensor' }).count(), 0);
  assert.equal((await ingest(secondKey)).status, 401, 'a deleted device has no key');
  assert.deepEqual(problems, []);
  await context.close();
});

// Clerk's SDK cannot be fetched here (no network): a stand-in with the same surface (load, user,
// session.getToken, mountSignIn, addListener, signOut) is served at the Frontend API URL the
// console derives from the publishable key, so what is checked is the console's side of it.
test('with a publishable key, sign-in and every token go through Clerk’s browser SDK', async () => {
  const clerkUser = `user_clerk_${run}`;
  const host = 'clerk.example.test';
  const publishableKey = `pk_test_${Buffer.from(`${host}$`).toString('base64')}`;
  const context = await browser.newContext();
  await context.route('**/config.json', (r) => r.fulfill({ json: { clerk_publishable_key: publishableKey } }));
  await context.route(`https://${host}/npm/@clerk/clerk-js@5/dist/clerk.browser.js`, (r) => r.fulfill({
    contentType: 'text/javascript',
    body: `window.Clerk = {
      user: null, session: null, tokens: 0, listeners: [],
      async load() { const id = localStorage.getItem('stub-user'); if (id) this.as(id); },
      as(id) {
        this.user = { id, primaryEmailAddress: { emailAddress: id + '@example.com' } };
        this.session = { getToken: async () => { this.tokens++; return (await fetch('/dev/token?user=' + id)).text(); } };
      },
      mountSignIn(el) {
        const b = document.createElement('button');
        b.textContent = 'Continue with Clerk';
        b.onclick = () => { localStorage.setItem('stub-user', '${clerkUser}'); this.as('${clerkUser}'); this.listeners.forEach((l) => l({ user: this.user })); };
        el.append(b);
      },
      addListener(l) { this.listeners.push(l); },
      async signOut() { localStorage.removeItem('stub-user'); this.user = null; },
    };`,
  }));
  const page = await context.newPage();
  await page.goto(CONSOLE);
  await page.getByRole('button', { name: 'Continue with Clerk' }).click();
  await page.getByText('No devices yet').waitFor();
  assert.equal(await page.locator('#who').getByText(`${clerkUser}@example.com`).count(), 1);
  const script = await page.evaluate(() => {
    const s = document.querySelector('script[data-clerk-publishable-key]');
    return { src: s.src, key: s.dataset.clerkPublishableKey, tokens: window.Clerk.tokens };
  });
  assert.equal(script.src, `https://${host}/npm/@clerk/clerk-js@5/dist/clerk.browser.js`);
  assert.equal(script.key, publishableKey);
  assert.ok(script.tokens >= 1, 'the API call took its token from session.getToken()');
  assert.equal(await page.getByLabel('User id').count(), 0, 'no development sign-in with Clerk configured');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('button', { name: 'Continue with Clerk' }).waitFor();
  await context.close();
});

test('a second user sees none of the first user’s data', async () => {
  const { context, page, problems } = await signIn(`user_other_${run}`);
  await page.getByText('No devices yet').waitFor();
  await page.goto(`${CONSOLE}/#/devices/${state.deviceId}`);
  await page.getByRole('alert').getByText('no such resource').waitFor();
  await page.goto(`${CONSOLE}/#/alerts`);
  await page.getByText('Nothing is firing.').waitFor();
  assert.equal(await page.getByText('Greenhouse').count(), 0);
  await page.goto(`${CONSOLE}/#/channels`);
  await page.getByText('No channels yet').waitFor();
  await page.goto(`${CONSOLE}/#/silences`);
  await page.getByText('No silences').waitFor();
  assert.deepEqual(problems, []);
  await context.close();
});
