// The console: a hash-routed single page over the API. Hash routes, so that the static host
// needs no rewrite rule (a CloudFront error page would also catch the API's own 404s).
import './style.css';
import 'uplot/dist/uPlot.min.css';
import * as auth from './auth.js';
import { h, fill, failure, form, field } from './dom.js';
import { devicesPage } from './pages/devices.js';
import { devicePage } from './pages/device.js';
import { alertsPage } from './pages/alerts.js';
import { channelsPage, deliveriesPage } from './pages/channels.js';
import { silencesPage } from './pages/silences.js';

const routes = [
  [/^#\/devices$/, devicesPage, 'Devices'],
  [/^#\/devices\/([0-9a-f-]{36})$/, devicePage, 'Device'],
  [/^#\/alerts$/, alertsPage, 'Alerts'],
  [/^#\/channels$/, channelsPage, 'Channels'],
  [/^#\/channels\/([0-9a-f-]{36})\/deliveries$/, deliveriesPage, 'Deliveries'],
  [/^#\/silences$/, silencesPage, 'Silences'],
];

const main = document.getElementById('main');
let current = 0; // a route change abandons what the previous page was still loading

async function route() {
  const token = ++current;
  if (!auth.signedIn()) return signIn();
  showChrome();
  const hash = location.hash || '#/devices';
  const match = routes.find(([pattern]) => pattern.test(hash));
  if (!match) return void (location.hash = '#/devices');
  const [pattern, page, title] = match;
  document.title = `${title} · Telemetry console`;
  for (const link of document.querySelectorAll('#nav a')) {
    const here = hash.startsWith(link.getAttribute('href'));
    if (here) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const view = h('div', { class: 'page' });
  fill(main, view);
  main.focus({ preventScroll: true });
  try {
    await page(view, ...pattern.exec(hash).slice(1), () => token === current);
  } catch (error) {
    if (token === current) fill(view, failure(error));
  }
}

function showChrome() {
  document.getElementById('nav').hidden = false;
  fill(
    document.getElementById('who'),
    h('span', { class: 'muted' }, auth.userLabel()),
    h('button', { class: 'link', onclick: () => auth.signOut().then(() => location.reload()) }, 'Sign out'),
  );
}

function signIn() {
  document.getElementById('nav').hidden = true;
  fill(document.getElementById('who'));
  const box = h('section', { class: 'card sign-in', 'aria-labelledby': 'sign-in-title' });
  fill(main, h('h1', { id: 'sign-in-title' }, 'Sign in'), box);
  auth.mountSignIn(box, (el, done) => {
    const user = h('input', { name: 'user', value: 'user_demo', autocomplete: 'username', required: true });
    fill(
      el,
      h('p', {}, 'Local development: sign in as any user id. Each id is a separate account.'),
      form({ 'aria-label': 'Development sign-in' }, [
        field('User id', user),
        h('button', { type: 'submit' }, 'Sign in'),
      ], async () => {
        done(user.value.trim() || 'user_demo');
        await route();
      }),
    );
  });
}

// A button's action that failed (a delete, a toggle): its message, until the next route.
const toast = document.getElementById('toast');
window.addEventListener('unhandledrejection', (event) => {
  toast.textContent = event.reason?.message ?? 'Something went wrong.';
  toast.hidden = false;
});
window.addEventListener('hashchange', () => {
  toast.hidden = true;
  route();
});
window.addEventListener('signed-out', () => {
  if (auth.signedIn()) fill(main, failure(new Error('Your session has ended. Sign in again.')));
});

auth.start().then(route, (error) => fill(main, failure(error)));
