// Silences and maintenance windows: mute notifications (never evaluation) for a while, or on a
// weekly schedule in a time zone.
import { page, post, del, get } from '../api.js';
import { h, fill, loading, empty, form, field, time, confirmDialog } from '../dom.js';

const WEEKDAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];
const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;

export async function silencesPage(view, live) {
  const devices = await page('/v1/devices', { limit: 200 });
  if (!live()) return;
  const names = new Map(devices.items.map((d) => [d.id, d.name]));
  const list = h('div', {}, loading());
  fill(view, h('h1', {}, 'Silences'),
    h('p', { class: 'hint' }, 'A silence mutes notifications; alerts still fire, resolve and are listed here in the console.'),
    h('section', { 'aria-labelledby': 'silences-title' }, h('h2', { id: 'silences-title' }, 'Your silences'), list),
    createSection(devices.items, load));

  function describe(s) {
    const scope = s.device_id ? `${names.get(s.device_id) ?? 'A device'}${s.rule_id ? ', one rule' : ''}` : 'All alerts';
    if (!s.recurrence) return [scope, ': from ', time(s.starts_at), ' until ', time(s.ends_at)];
    const r = s.recurrence;
    return [scope, `: every ${r.weekdays.join(', ')} ${r.start}–${r.end} (${r.timezone})`];
  }

  async function load() {
    const silences = await page('/v1/silences', { limit: 200 });
    if (!live()) return;
    if (silences.items.length === 0) return fill(list, empty('No silences: every alert event is delivered.'));
    fill(list, h('ul', { class: 'silences', 'data-testid': 'silences' }, silences.items.map((s) => h('li', { class: 'row spread' },
      h('span', {}, describe(s), s.comment ? [' — ', h('q', {}, s.comment)] : null),
      h('button', {
        type: 'button', class: 'danger',
        onclick: async () => {
          if (!(await confirmDialog('Delete this silence?', 'Notifications it muted are delivered again from now on.'))) return;
          await del(`/v1/silences/${s.id}`);
          await load();
        },
      }, 'Delete')))));
  }
  await load();
}

function createSection(devices, reload) {
  const device = h('select', { name: 'device_id' },
    h('option', { value: '' }, 'All my devices'), devices.map((d) => h('option', { value: d.id }, d.name)));
  const rule = h('select', { name: 'rule_id', disabled: true }, h('option', { value: '' }, 'Every rule'));
  device.addEventListener('change', async () => {
    fill(rule, h('option', { value: '' }, 'Every rule'));
    rule.disabled = !device.value;
    if (!device.value) return;
    const rules = await get(`/v1/devices/${device.value}/rules`, { limit: 100 });
    rule.append(...rules.items.map((r) => h('option', { value: r.id }, `${r.metric} ${r.comparator} ${r.threshold ?? ''}`)));
  });
  const kind = h('select', { name: 'kind' }, h('option', { value: 'once' }, 'Once, until a time'), h('option', { value: 'window' }, 'Maintenance window, every week'));
  const endsAt = h('input', { name: 'ends_at', type: 'datetime-local' });
  const weekdays = WEEKDAYS.map((d) => h('input', { type: 'checkbox', name: 'recurrence.weekdays', value: d, id: `wd-${d}` }));
  const start = h('input', { name: 'recurrence.start', type: 'time', value: '02:00' });
  const end = h('input', { name: 'recurrence.end', type: 'time', value: '04:00' });
  const zone = h('input', { name: 'recurrence.timezone', value: ZONE, list: 'zones', autocomplete: 'off' });
  const comment = h('input', { name: 'comment', maxlength: 500 });
  const once = h('div', {}, field('Until (your local time)', endsAt));
  const windowFields = h('div', { hidden: true },
    h('fieldset', {}, h('legend', {}, 'Weekdays'), weekdays.map((box) => h('label', { class: 'check' }, box, box.value))),
    h('div', { class: 'row' }, field('From', start), field('To', end, 'May cross midnight.')),
    field('Time zone', zone, 'Daylight-saving changes follow this zone’s wall clock.'),
    h('datalist', { id: 'zones' }, (Intl.supportedValuesOf?.('timeZone') ?? []).map((z) => h('option', { value: z }))));
  kind.addEventListener('change', () => {
    once.hidden = kind.value !== 'once';
    windowFields.hidden = kind.value === 'once';
  });
  return h('section', { class: 'card', 'aria-labelledby': 'new-silence' },
    h('h2', { id: 'new-silence' }, 'Add a silence'),
    form({ class: 'grid' }, [
      field('Devices', device), field('Rules', rule), field('Kind', kind), once, windowFields,
      field('Comment (optional)', comment),
      h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Add silence')),
    ], async (el) => {
      const body = { device_id: device.value || null, rule_id: rule.value || null, comment: comment.value.trim() || null };
      if (kind.value === 'once') {
        body.ends_at = endsAt.value ? new Date(endsAt.value).toISOString() : null;
      } else {
        body.recurrence = {
          weekdays: weekdays.filter((b) => b.checked).map((b) => b.value),
          start: start.value, end: end.value, timezone: zone.value.trim(),
        };
      }
      await post('/v1/silences', body);
      el.reset();
      await reload();
    }));
}
