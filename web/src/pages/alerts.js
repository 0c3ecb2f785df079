// Alerts: firing first, then resolved; filters; acknowledge with a comment.
import { page, post } from '../api.js';
import { h, fill, loading, empty, failure, form, field, time, badge } from '../dom.js';

export async function alertsPage(view, live) {
  const devices = await page('/v1/devices', { limit: 200 });
  if (!live()) return;
  const names = new Map(devices.items.map((d) => [d.id, d.name]));
  const status = h('select', { name: 'status' },
    h('option', { value: '' }, 'Firing, then resolved'), h('option', { value: 'firing' }, 'Firing'), h('option', { value: 'resolved' }, 'Resolved'));
  const acknowledged = h('select', { name: 'acknowledged' },
    h('option', { value: '' }, 'Any'), h('option', { value: 'false' }, 'Not acknowledged'), h('option', { value: 'true' }, 'Acknowledged'));
  const device = h('select', { name: 'device_id' },
    h('option', { value: '' }, 'All devices'), devices.items.map((d) => h('option', { value: d.id }, d.name)));
  const results = h('div', {}, loading());
  const filters = h('form', { class: 'inline filters', 'aria-label': 'Filter alerts', onchange: () => load() },
    field('Status', status), field('Acknowledged', acknowledged), field('Device', device));
  filters.addEventListener('submit', (event) => event.preventDefault());
  fill(view, h('h1', {}, 'Alerts'), filters, results);

  async function load() {
    fill(results, loading());
    const query = { acknowledged: acknowledged.value, device_id: device.value, limit: 50 };
    const groups = status.value ? [status.value] : ['firing', 'resolved'];
    try {
      const sections = await Promise.all(groups.map(async (s) => section(s, await page('/v1/alerts', { ...query, status: s }))));
      if (live()) fill(results, sections);
    } catch (error) {
      fill(results, failure(error));
    }
  }

  function section(which, alerts) {
    const title = which === 'firing' ? 'Firing' : 'Resolved';
    const list = h('ul', { class: 'alerts', 'data-testid': `alerts-${which}` }, alerts.items.map(item));
    const more = h('button', { class: 'secondary', hidden: !alerts.cursor }, 'Show more');
    more.onclick = async () => {
      list.append(...(await alerts.more()).map(item));
      more.hidden = !alerts.cursor;
    };
    return h('section', { 'aria-label': title }, h('h2', {}, title, ' ', h('span', { class: 'muted' }, String(alerts.items.length) + (alerts.cursor ? '+' : ''))),
      alerts.items.length ? [list, more] : empty(which === 'firing' ? 'Nothing is firing.' : 'No resolved alerts.'));
  }

  function item(alert) {
    const li = h('li', { class: `alert alert-${alert.status}`, 'data-alert-id': alert.id });
    const render = (a) => fill(li,
      h('div', { class: 'row spread' },
        h('strong', {}, names.get(a.device_id) ?? 'Device', ' · ', a.metric, a.value === null ? ' (absent)' : ` = ${a.value}`),
        badge(a.status)),
      h('p', { class: 'muted' }, 'Fired ', time(a.triggered_at), a.resolved_at ? [', resolved ', time(a.resolved_at)] : null,
        ' · ', h('a', { href: `#/devices/${a.device_id}` }, 'device')),
      a.acknowledged_at
        ? h('p', { class: 'ack', 'data-testid': 'acknowledged' }, '✓ Acknowledged ', time(a.acknowledged_at), ` by ${a.acknowledged_by}`,
          a.comment ? [': ', h('q', {}, a.comment)] : null)
        : ackForm(a, render));
    render(alert);
    return li;
  }

  await load();
}

function ackForm(alert, render) {
  const comment = h('textarea', { name: 'comment', rows: 2, maxlength: 500 });
  const details = h('details', { class: 'ack-form' }, h('summary', {}, 'Acknowledge…'));
  details.append(form({ 'aria-label': 'Acknowledge alert' }, [
    field('Comment (optional)', comment),
    h('button', { type: 'submit' }, 'Acknowledge'),
  ], async () => {
    const body = comment.value.trim() ? { comment: comment.value.trim() } : {};
    render(await post(`/v1/alerts/${alert.id}/ack`, body));
  }));
  return details;
}

