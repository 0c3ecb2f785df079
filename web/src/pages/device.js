// One device: its latest values, a chart per metric over a chosen range, CSV export, its rules,
// and managing it (rename, rotate the key, delete).
import { get, post, patch, del, send, withQuery, page } from '../api.js';
import { h, fill, loading, empty, failure, form, field, time, badge, confirmDialog, uid } from '../dom.js';
import { chart } from '../chart.js';
import { keyOnce } from './devices.js';

// Range presets and the bucket each one reads: 60 to 365 points, every one from the aggregates
// for ranges of a week and more.
export const RANGES = [
  { label: '1 h', seconds: 3600, bucket: '1m' },
  { label: '24 h', seconds: 86400, bucket: '15m' },
  { label: '7 d', seconds: 7 * 86400, bucket: '1h' },
  { label: '30 d', seconds: 30 * 86400, bucket: '6h' },
  { label: '1 y', seconds: 365 * 86400, bucket: '1d' },
];

export async function devicePage(view, id, live) {
  fill(view, loading());
  const [device, latest] = await Promise.all([get(`/v1/devices/${id}`), get(`/v1/devices/${id}/latest`)]);
  if (!live()) return;
  const base = `/v1/devices/${id}`;
  const header = h('div');
  const keyPanel = h('div');
  const charts = h('div', { class: 'charts' });
  let range = RANGES[1];

  const showHeader = () =>
    fill(
      header,
      h('p', { class: 'crumbs' }, h('a', { href: '#/devices' }, 'Devices'), ' / '),
      h('h1', {}, device.name, ' ', badge(device.status)),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Last seen'), h('dd', {}, time(device.last_seen_at)),
        h('dt', {}, 'Key created'), h('dd', {}, time(device.key_created_at)),
        device.previous_key_expires_at ? [h('dt', {}, 'Previous key until'), h('dd', {}, time(device.previous_key_expires_at))] : null,
        h('dt', {}, 'Id'), h('dd', {}, h('code', {}, device.id))),
    );
  showHeader();

  const presets = h('div', { class: 'segmented', role: 'radiogroup', 'aria-label': 'Range' },
    RANGES.map((r) =>
      h('button', {
        type: 'button', role: 'radio', 'aria-checked': String(r === range),
        onclick: (event) => {
          range = r;
          for (const b of presets.children) b.setAttribute('aria-checked', String(b === event.currentTarget));
          drawCharts();
        },
      }, r.label)));
  const csvStatus = h('span', { role: 'status', class: 'muted' });
  const csvButton = h('button', { type: 'button', class: 'secondary', onclick: () => downloadCsv() }, 'Download CSV');

  // The chosen range, ending now.
  function shownRange() {
    const to = new Date();
    return { from: new Date(to - range.seconds * 1000).toISOString(), to: to.toISOString() };
  }

  async function drawCharts() {
    const metrics = latest.metrics.map((m) => m.metric);
    if (metrics.length === 0) return fill(charts, empty('No readings yet. Send some with the device key; they appear here.'));
    const { from, to } = shownRange();
    fill(charts, metrics.map((metric) => h('figure', { class: 'card chart', 'data-metric': metric },
      h('figcaption', {}, metric, ' ', h('span', { class: 'muted' }, `${range.label}, per ${range.bucket}`)), loading())));
    await Promise.all(metrics.map(async (metric, i) => {
      const figure = charts.children[i];
      try {
        const rollup = await get(`${base}/rollups`, { metric, from, to, bucket: range.bucket });
        if (!live()) return;
        figure.lastChild.remove();
        chart(figure, rollup);
      } catch (error) {
        figure.lastChild.replaceWith(failure(error));
      }
    }));
  }

  // Every page of the range, following Link: rel="next", into one file.
  async function downloadCsv() {
    const { from, to } = shownRange();
    csvButton.disabled = true;
    let next = withQuery(`${base}/readings`, { from, to, limit: 10000, format: 'csv' });
    const parts = [];
    let rows = 0;
    try {
      while (next) {
        const response = await send('GET', next, undefined, 'text/csv');
        const text = await response.text();
        parts.push(parts.length ? text.slice(text.indexOf('\n') + 1) : text);
        rows += text.split('\n').length - 2;
        csvStatus.textContent = `${rows} readings…`;
        next = response.headers.get('Link')?.match(/<([^>]+)>;\s*rel="next"/)?.[1];
      }
      const link = h('a', {
        href: URL.createObjectURL(new Blob(parts, { type: 'text/csv' })),
        download: `${device.name.replace(/[^\w.-]+/g, '_')}-${from.slice(0, 10)}-${to.slice(0, 10)}.csv`,
      });
      link.click();
      csvStatus.textContent = `${rows} readings downloaded.`;
    } catch (error) {
      csvStatus.textContent = error.message;
    } finally {
      csvButton.disabled = false;
    }
  }

  fill(
    view,
    header,
    keyPanel,
    h('section', { 'aria-labelledby': 'latest-title' },
      h('h2', { id: 'latest-title' }, 'Latest values'), latestTable(latest.metrics)),
    h('section', { 'aria-labelledby': 'charts-title' },
      h('div', { class: 'row spread' }, h('h2', { id: 'charts-title' }, 'Charts'), presets),
      h('p', { class: 'hint' }, 'The line is the average of each bucket; the band spans its minimum and maximum.'),
      charts,
      h('div', { class: 'row' }, csvButton, csvStatus)),
    rulesSection(base, latest.metrics, live),
    manageSection(device, base, {
      renamed: (changed) => { Object.assign(device, changed); showHeader(); },
      rotated: (key) => {
        device.previous_key_expires_at = key.previous_key_expires_at;
        device.key_created_at = new Date().toISOString();
        showHeader();
        fill(keyPanel, keyOnce(device.name, key.device_key, key.previous_key_expires_at));
        keyPanel.scrollIntoView();
      },
    }),
  );
  await drawCharts();
}

function latestTable(metrics) {
  if (metrics.length === 0) return empty('No readings yet.');
  return h('div', { class: 'table-wrap' }, h('table', { 'data-testid': 'latest' },
    h('thead', {}, h('tr', {}, ['Metric', 'Value', 'Recorded'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, metrics.map((m) => h('tr', {},
      h('td', {}, m.metric), h('td', { class: 'num' }, m.value), h('td', {}, time(m.recorded_at)))))));
}

const COMPARATORS = { gt: '>', gte: '≥', lt: '<', lte: '≤', absent: 'no reading for' };

export const describeRule = (r) =>
  r.comparator === 'absent'
    ? `${r.metric}: no reading for ${r.for_seconds} s`
    : `${r.metric} ${COMPARATORS[r.comparator]} ${r.threshold}` +
      (r.for_seconds ? ` for ${r.for_seconds} s` : '') +
      (r.clear_threshold !== null ? `, clears at ${r.clear_threshold}` : '');

function rulesSection(base, metrics, live) {
  const list = h('div', {}, loading());
  const editing = { rule: null };
  const metric = h('input', { name: 'metric', list: 'metric-names', required: true, autocomplete: 'off' });
  const comparator = h('select', { name: 'comparator' },
    Object.entries({ gt: 'greater than', gte: 'at least', lt: 'less than', lte: 'at most', absent: 'absent (no reading for a while)' })
      .map(([value, label]) => h('option', { value }, label)));
  const threshold = h('input', { name: 'threshold', inputmode: 'decimal', autocomplete: 'off' });
  const forSeconds = h('input', { name: 'for_seconds', type: 'number', min: 0, step: 1, inputmode: 'numeric' });
  const clear = h('input', { name: 'clear_threshold', inputmode: 'decimal', autocomplete: 'off' });
  const thresholdFields = [field('Threshold', threshold), field('Clears at (optional)', clear, 'Hysteresis: a firing alert resolves only once the value is back past this.')];
  const submit = h('button', { type: 'submit' }, 'Add rule');
  const cancel = h('button', { type: 'button', class: 'secondary', hidden: true, onclick: () => reset() }, 'Cancel');
  const title = h('h3', { id: uid('rule-form') }, 'New rule');

  const syncComparator = () => thresholdFields.forEach((f) => (f.hidden = comparator.value === 'absent'));
  comparator.addEventListener('change', syncComparator);

  function reset() {
    editing.rule = null;
    editor.reset();
    title.textContent = 'New rule';
    submit.textContent = 'Add rule';
    cancel.hidden = true;
    comparator.disabled = false;
    syncComparator();
  }

  function edit(rule) {
    editing.rule = rule;
    metric.value = rule.metric;
    comparator.value = rule.comparator;
    threshold.value = rule.threshold ?? '';
    forSeconds.value = rule.for_seconds;
    clear.value = rule.clear_threshold ?? '';
    title.textContent = `Edit rule: ${describeRule(rule)}`;
    submit.textContent = 'Save rule';
    cancel.hidden = false;
    syncComparator();
    metric.focus();
  }

  const editor = form({ 'aria-labelledby': title.id, class: 'grid' }, [
    field('Metric', metric),
    field('Condition', comparator),
    thresholdFields,
    field('For (seconds)', forSeconds, 'How long the condition must hold; an absent rule needs at least 60.'),
    h('div', { class: 'row' }, submit, cancel),
  ], async () => {
    const body = { metric: metric.value.trim(), comparator: comparator.value };
    if (comparator.value !== 'absent') {
      if (threshold.value.trim() !== '') body.threshold = threshold.value.trim();
      body.clear_threshold = clear.value.trim() === '' ? null : clear.value.trim();
    }
    if (forSeconds.value !== '') body.for_seconds = Number(forSeconds.value);
    if (editing.rule) await patch(`${base}/rules/${editing.rule.id}`, body);
    else await post(`${base}/rules`, body);
    reset();
    await load();
  });

  async function load() {
    const rules = await page(`${base}/rules`, { limit: 100 });
    if (!live()) return;
    const all = [...rules.items];
    while (rules.cursor) all.push(...(await rules.more()));
    if (all.length === 0) return fill(list, empty('No rules. Add one below to be alerted when a value crosses a threshold.'));
    fill(list, h('ul', { class: 'rules', 'data-testid': 'rules' }, all.map((rule) => h('li', {},
      h('span', {}, describeRule(rule)),
      h('span', { class: 'row' },
        h('button', { type: 'button', class: 'secondary', onclick: () => edit(rule), 'aria-label': `Edit ${describeRule(rule)}` }, 'Edit'),
        h('button', {
          type: 'button', class: 'danger', 'aria-label': `Delete ${describeRule(rule)}`,
          onclick: async () => {
            if (!(await confirmDialog('Delete this rule?', `${describeRule(rule)}. Its alerts are deleted with it.`))) return;
            await del(`${base}/rules/${rule.id}`);
            await load();
          },
        }, 'Delete'))))));
  }

  load().catch((error) => fill(list, failure(error)));
  syncComparator();
  return h('section', { 'aria-labelledby': 'rules-title' },
    h('h2', { id: 'rules-title' }, 'Alert rules'),
    list,
    h('datalist', { id: 'metric-names' }, metrics.map((m) => h('option', { value: m.metric }))),
    h('div', { class: 'card' }, title, editor));
}

function manageSection(device, base, { renamed, rotated }) {
  const name = h('input', { name: 'name', value: device.name, maxlength: 100, required: true });
  const grace = h('select', { name: 'grace_seconds', value: '86400' },
    [[0, 'at once'], [3600, 'in 1 hour'], [86400, 'in 24 hours'], [604800, 'in 7 days']]
      .map(([value, label]) => h('option', { value: String(value) }, label)));
  return h('section', { 'aria-labelledby': 'manage-title' },
    h('h2', { id: 'manage-title' }, 'Manage'),
    h('div', { class: 'card' },
      form({ class: 'inline', 'aria-label': 'Rename' }, [field('Name', name), h('button', { type: 'submit' }, 'Rename')], async () => {
        renamed(await patch(base, { name: name.value }));
      }),
      form({ class: 'inline', 'aria-label': 'Rotate key' }, [
        field('The current key stops working', grace),
        h('button', { type: 'submit' }, 'Rotate key'),
      ], async () => {
        rotated(await post(`${base}/keys`, { grace_seconds: Number(grace.value) }));
      }),
      h('div', { class: 'row' },
        h('button', {
          type: 'button', class: 'danger',
          onclick: async () => {
            const sure = await confirmDialog(`Delete ${device.name}?`,
              'Its key stops working at once, and its readings, rules and alerts are deleted. This cannot be undone.');
            if (!sure) return;
            await del(base);
            location.hash = '#/devices';
          },
        }, 'Delete device…'))));
}
