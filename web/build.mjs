// `npm run build`: src/ → dist/ (app.js, app.css, index.html), minified, and the size report
// (JS + CSS gzip, also in target/web-size.json; the goal is 150 kB without the Clerk SDK,
// which Clerk serves itself).
import { build } from 'esbuild';
import { copyFile, mkdir, readFile, writeFile, rm } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';

const out = new URL('./dist/', import.meta.url);
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  entryPoints: { app: 'src/main.js' },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2022'],
  outdir: out.pathname,
  legalComments: 'none',
  logLevel: 'warning',
});
await copyFile(new URL('./index.html', import.meta.url), new URL('index.html', out));

let total = 0;
const files = {};
for (const name of ['app.js', 'app.css', 'index.html']) {
  const bytes = await readFile(new URL(name, out));
  const gzip = gzipSync(bytes, { level: 9 }).length;
  files[name] = { bytes: bytes.length, gzip };
  if (name !== 'index.html') total += gzip;
}
const report = { js_css_gzip_bytes: total, goal_bytes: 150 * 1024, files };
// Beside the other measurements, not in dist/ (which is what gets published).
await mkdir(new URL('../target/', import.meta.url), { recursive: true });
await writeFile(new URL('../target/web-size.json', import.meta.url), JSON.stringify(report, null, 2) + '\n');
console.log(`web: built dist/ — JS + CSS ${(total / 1024).toFixed(1)} kB gzip (goal ≤ 150 kB)`);
if (total > report.goal_bytes) {
  console.error('web: over the size goal');
  process.exit(1);
}
