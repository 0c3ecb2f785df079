// Channels: where alerts are delivered (webhook, Slack, email); test one; its delivery log.
import { get, page, post, patch, del } from '../api.js';
import { h, fill, loading, empty, failure, form, field, time, badge, confirmDialog } from '../dom.js';

const EVENTS = ['alert.firing', 'alert.resolved', 'alert.acknowledged', 'device.offline', 'device.online'];
const TARGETS = {
  webhook: { key: 'url', label: 'URL (https)', hint: 'Signed the Standard Webhooks way with the secret shown once.' },
  slack: { key: 'url', label: 'Slack incoming-webhook URL' },
  email: { key: 'to', label: 'Email address' },
};

export async function channelsPage(view, live) {
  const list = h('div', {}, loading());
  const secretPanel = h('div');
  fill(view, h('h1', {}, 'Channels'),
    h('p', { class: 'hint' }, 'Every alert event is delivered to each channel it matches, at least once.'),
    secretPanel,
    h('section', { 'aria-labelledby': 'channels-title' }, h('h2', { id: 'channels-title' }, 'Your channels'), list),
    createSection());

  function createSection() {
    const name = h('input', { name: 'name', maxlength: 100, required: true, autocomplete: 'off' });
    const type = h('select', { name: 'type' }, Object.keys(TARGETS).map((t) => h('option', { value: t }, t)));
    const target = h('input', { name: 'target.url', required: true, autocomplete: 'off' });
    const targetField = field(TARGETS.webhook.label, target, TARGETS.webhook.hint);
    const sync = () => {
      const t = TARGETS[type.value];
      target.name = `target.${t.key}`;
      target.type = t.key === 'to' ? 'email' : 'url';
      targetField.querySelector('label').textContent = t.label;
      targetField.querySelector('.hint')?.replaceChildren(t.hint ?? '');
    };
    type.addEventListener('change', sync);
    const events = EVENTS.map((e) => h('input', { type: 'checkbox', name: 'events', value: e, defaultChecked: true, id: `event-${e}` }));
    return h('section', { class: 'card', 'aria-labelledby': 'new-channel' },
      h('h2', { id: 'new-channel' }, 'Add a channel'),
      form({ class: 'grid' }, [
        field('Name', name), field('Type', type), targetField,
        h('fieldset', {}, h('legend', {}, 'Events'),
          events.map((box) => h('label', { class: 'check' }, box, box.value))),
        h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Add channel')),
      ], async (el) => {
        const chosen = events.filter((box) => box.checked).map((box) => box.value);
        const channel = await post('/v1/channels', {
          name: name.value, type: type.value,
          target: { [TARGETS[type.value].key]: target.value.trim() },
          events: chosen,
        });
        el.reset();
        sync();
        if (channel.signing_secret) fill(secretPanel, secretOnce(channel));
        await load();
      }));
  }

  async function load() {
    const channels = await page('/v1/channels', { limit: 50 });
    if (!live()) return;
    if (channels.items.length === 0) return fill(list, empty('No channels yet: alerts are listed, but reach nobody. Add one below.'));
    fill(list, h('ul', { class: 'channels', 'data-testid': 'channels' }, channels.items.map((c) => channelItem(c, load))));
  }
  await load();
}

function channelItem(channel, reload) {
  const result = h('div', { role: 'status', class: 'test-result' });
  return h('li', { class: 'card', 'data-channel-id': channel.id },
    h('div', { class: 'row spread' },
      h('strong', {}, channel.name), h('span', {}, badge(channel.type, 'neutral'), ' ', channel.enabled ? badge('enabled', 'online') : badge('disabled', 'offline'))),
    h('p', { class: 'muted wrap' }, channel.target.url ?? channel.target.to),
    h('p', { class: 'muted' }, channel.events.join(', ')),
    h('div', { class: 'row' },
      h('button', {
        type: 'button',
        onclick: async (event) => {
          event.currentTarget.disabled = true;
          fill(result, loading('Sending a test event…'));
          try {
            fill(result, deliveryResult(await post(`/v1/channels/${channel.id}/test`)));
          } catch (error) {
            fill(result, failure(error));
          } finally {
            event.target.disabled = false;
          }
        },
      }, 'Send test'),
      h('a', { class: 'button secondary', href: `#/channels/${channel.id}/deliveries` }, 'Deliveries'),
      h('button', {
        type: 'button', class: 'secondary',
        onclick: async () => { await patch(`/v1/channels/${channel.id}`, { enabled: !channel.enabled }); await reload(); },
      }, channel.enabled ? 'Disable' : 'Enable'),
      h('button', {
        type: 'button', class: 'danger',
        onclick: async () => {
          if (!(await confirmDialog(`Delete ${channel.name}?`, 'Pending deliveries to it are dropped.'))) return;
          await del(`/v1/channels/${channel.id}`);
          await reload();
        },
      }, 'Delete')),
    result);
}

function deliveryResult(d) {
  const detail = [d.last_status_code ? `HTTP ${d.last_status_code}` : null, d.last_error].filter(Boolean).join(' · ');
  return h('p', { 'data-testid': 'delivery-result', 'data-status': d.status },
    'Test ', badge(d.status), detail ? ` ${detail}` : '',
    d.status === 'pending' ? [' — retried ', time(d.next_attempt_at)] : '');
}

function secretOnce(channel) {
  const panel = h('section', { class: 'card key-once', 'aria-label': 'Signing secret' },
    h('p', { class: 'warning' }, h('strong', {}, 'Shown this once. '), `The signing secret of ${channel.name}; your receiver verifies each delivery with it.`),
    h('div', { class: 'row' },
      h('code', { class: 'key' }, channel.signing_secret),
      h('button', { type: 'button', class: 'secondary', onclick: () => panel.remove() }, 'I have saved it')));
  return panel;
}

export async function deliveriesPage(view, id, live) {
  const channel = await get(`/v1/channels/${id}`);
  const status = h('select', { name: 'status' },
    ['', 'pending', 'delivered', 'failed', 'suppressed'].map((s) => h('option', { value: s }, s || 'Any')));
  const list = h('div', {}, loading());
  fill(view,
    h('p', { class: 'crumbs' }, h('a', { href: '#/channels' }, 'Channels'), ' / '),
    h('h1', {}, `Deliveries to ${channel.name}`),
    h('form', { class: 'inline filters', onchange: () => load(), onsubmit: (e) => e.preventDefault() }, field('Status', status)),
    list);
  async function load() {
    fill(list, loading());
    const deliveries = await page(`/v1/channels/${id}/deliveries`, { status: status.value, limit: 50 });
    if (!live()) return;
    if (deliveries.items.length === 0) return fill(list, empty('No deliveries.'));
    const row = (d) => h('tr', {},
      h('td', {}, time(d.created_at)), h('td', {}, d.event_type), h('td', {}, badge(d.status)),
      h('td', { class: 'num' }, String(d.attempts)),
      h('td', {}, [d.last_status_code, d.last_error].filter(Boolean).join(' · ') || '—'),
      h('td', {}, time(d.delivered_at ?? d.next_attempt_at)));
    const body = h('tbody', {}, deliveries.items.map(row));
    const more = h('button', { class: 'secondary', hidden: !deliveries.cursor }, 'Show more');
    more.onclick = async () => { body.append(...(await deliveries.more()).map(row)); more.hidden = !deliveries.cursor; };
    fill(list, h('div', { class: 'table-wrap' }, h('table', { 'data-testid': 'deliveries' },
      h('thead', {}, h('tr', {}, ['Created', 'Event', 'Status', 'Attempts', 'Last answer', 'Delivered / next'].map((t) => h('th', { scope: 'col' }, t)))),
      body)), more);
  }
  await load().catch((error) => fill(list, failure(error)));
}
