// Devices: the list, registering one (its key shown once), and the key panel shared with rotation.
import { page, post } from '../api.js';
import { h, fill, loading, empty, form, field, time, badge } from '../dom.js';

export async function devicesPage(view, live) {
  const list = h('div', {}, loading());
  const keyPanel = h('div');
  const name = h('input', { name: 'name', maxlength: 100, required: true, autocomplete: 'off' });
  fill(
    view,
    h('h1', {}, 'Devices'),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'new-device' },
      h('h2', { id: 'new-device' }, 'Register a device'),
      form({ class: 'inline' }, [field('Name', name), h('button', { type: 'submit' }, 'Register')], async () => {
        const device = await post('/v1/devices', { name: name.value });
        name.value = '';
        fill(keyPanel, keyOnce(device.name, device.device_key, null, device.id));
        await load();
      }),
    ),
    keyPanel,
    h('section', { 'aria-labelledby': 'your-devices' }, h('h2', { id: 'your-devices' }, 'Your devices'), list),
  );

  async function load() {
    const devices = await page('/v1/devices', { limit: 50 });
    if (!live()) return;
    if (devices.items.length === 0) {
      return fill(list, empty('No devices yet. Register one above; it gets a key to send readings with.'));
    }
    const body = h('tbody', {}, devices.items.map(row));
    const more = h('button', { class: 'secondary', hidden: !devices.cursor }, 'Show more');
    more.onclick = async () => {
      body.append(...(await devices.more()).map(row));
      more.hidden = !devices.cursor;
    };
    fill(
      list,
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { 'data-testid': 'devices' },
          h('thead', {}, h('tr', {}, ['Name', 'Status', 'Last seen', 'Registered'].map((t) => h('th', { scope: 'col' }, t)))),
          body,
        ),
      ),
      more,
    );
  }
  await load();
}

const row = (device) =>
  h(
    'tr',
    {},
    h('td', {}, h('a', { href: `#/devices/${device.id}` }, device.name)),
    h('td', {}, badge(device.status)),
    h('td', {}, time(device.last_seen_at)),
    h('td', {}, time(device.created_at)),
  );

/** The one time a device key is shown: a warning, the key, a copy button. */
export function keyOnce(name, key, previousExpires, deviceId) {
  const status = h('span', { role: 'status', class: 'muted' });
  const panel = h(
    'section',
    { class: 'card key-once', 'aria-labelledby': 'key-title' },
    h('h2', { id: 'key-title' }, `Device key for ${name}`),
    h(
      'p',
      { class: 'warning' },
      h('strong', {}, 'Shown this once. '),
      'Copy it into the device now: only a hash is stored, and it cannot be shown again.',
      previousExpires ? [' The previous key keeps working until ', time(previousExpires), '.'] : '',
    ),
    h('div', { class: 'row' },
      h('code', { class: 'key', 'data-testid': 'device-key' }, key),
      h('button', {
        type: 'button',
        onclick: async () => {
          try {
            await navigator.clipboard.writeText(key);
            status.textContent = 'Copied.';
          } catch {
            getSelection().selectAllChildren(panel.querySelector('code'));
            status.textContent = 'Selected: press Ctrl+C (⌘C) to copy.';
          }
        },
      }, 'Copy'),
      status,
    ),
    h('p', { class: 'hint' }, 'The device sends readings with ',
      h('code', {}, 'Authorization: Bearer <key>'), ' to ', h('code', {}, 'POST /v1/ingest'), '.'),
    h('div', { class: 'row' },
      deviceId && !location.hash.includes(deviceId) ? h('a', { href: `#/devices/${deviceId}` }, 'Open the device') : null,
      h('button', { type: 'button', class: 'secondary', onclick: () => panel.remove() }, 'I have saved it')),
  );
  return panel;
}
