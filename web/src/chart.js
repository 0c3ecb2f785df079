// A rollup as a chart: the average as a line, min–max as a band (uPlot, ~50 kB, canvas).
import uPlot from 'uplot';
import { h, empty } from './dom.js';

/**
 * Draws `rollup` into `figure`. The numbers drawn are kept on `figure.chartData` (exact decimal
 * strings beside the plotted numbers), which is what the browser tests assert on.
 */
export function chart(figure, rollup) {
  const points = rollup.points;
  figure.chartData = {
    bucket: rollup.bucket,
    t: points.map((p) => p.t),
    count: points.map((p) => p.count),
    min: points.map((p) => p.min),
    max: points.map((p) => p.max),
    avg: points.map((p) => p.avg),
  };
  figure.dataset.points = String(points.length);
  if (points.length === 0) return figure.append(empty('No readings in this range.'));

  const data = [
    points.map((p) => Date.parse(p.t) / 1000),
    points.map((p) => Number(p.max)),
    points.map((p) => Number(p.min)),
    points.map((p) => Number(p.avg)),
  ];
  const box = h('div', { class: 'plot', role: 'img', 'aria-label': summary(rollup) });
  figure.append(box);
  const accent = getComputedStyle(document.documentElement).getPropertyValue('--accent').trim() || '#1d4ed8';
  const plot = new uPlot(
    {
      width: Math.max(box.clientWidth, 280),
      height: 220,
      // The whole chosen range on the x axis, however few buckets hold readings.
      scales: { x: { time: true, range: () => [Date.parse(rollup.from) / 1000, Date.parse(rollup.to) / 1000] } },
      series: [
        {},
        { label: 'max', stroke: 'rgba(29,78,216,.35)', width: 1, points: { show: false } },
        { label: 'min', stroke: 'rgba(29,78,216,.35)', width: 1, points: { show: false } },
        { label: 'avg', stroke: accent, width: 2, points: { show: points.length < 80 } },
      ],
      bands: [{ series: [1, 2], fill: 'rgba(29,78,216,.12)' }],
      axes: [{}, { size: 60 }],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    },
    data,
    box,
  );
  new ResizeObserver(() => plot.setSize({ width: Math.max(box.clientWidth, 280), height: 220 })).observe(box);
}

function summary(rollup) {
  const mins = rollup.points.map((p) => Number(p.min));
  const maxs = rollup.points.map((p) => Number(p.max));
  return `${rollup.metric}: ${rollup.points.length} points per ${rollup.bucket}, ` +
    `from ${Math.min(...mins)} to ${Math.max(...maxs)}`;
}
