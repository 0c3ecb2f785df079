// The console for local use (`scripts/dev` starts it): serves dist/, forwards /v1/* and
// /webhooks/* to the local API (one origin, as CloudFront gives in production), and signs the
// page in with development tokens from /dev/token, minted by the repository's `dev-token`.
//
//   API_URL=http://localhost:9000 DEV_TOKEN_BIN=../target/debug/dev-token PORT=9001 node serve.mjs
import { createServer, request } from 'node:http';
import { readFile } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { extname } from 'node:path';

const port = Number(process.env.PORT ?? 9001);
const api = new URL(process.env.API_URL ?? 'http://localhost:9000');
const devTokenBin = process.env.DEV_TOKEN_BIN;
const root = new URL('./dist/', import.meta.url);
const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json', '.png': 'image/png' };

const server = createServer(async (req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname.startsWith('/v1/') || url.pathname.startsWith('/webhooks/')) return forward(req, res);
  if (url.pathname === '/config.json') return send(res, 200, types['.json'], '{"auth":"dev"}');
  if (url.pathname === '/dev/token') return devToken(url.searchParams.get('user') ?? '', res);
  const path = url.pathname === '/' ? 'index.html' : url.pathname.slice(1);
  if (path.includes('..')) return send(res, 404, 'text/plain', 'not found');
  try {
    send(res, 200, types[extname(path)] ?? 'application/octet-stream', await readFile(new URL(path, root)));
  } catch {
    send(res, 404, 'text/plain', 'not found');
  }
});

function send(res, status, type, body) {
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
  res.end(body);
}

function forward(req, res) {
  const upstream = request(
    { host: api.hostname, port: api.port, method: req.method, path: req.url, headers: { ...req.headers, host: api.host } },
    (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      answer.pipe(res);
    },
  );
  upstream.on('error', () => send(res, 502, 'application/json', '{"error":{"code":"unavailable","message":"The local API is not running."}}'));
  req.pipe(upstream);
}

function devToken(user, res) {
  if (!devTokenBin || !/^[A-Za-z0-9_-]{1,64}$/.test(user)) return send(res, 400, 'text/plain', 'no development sign-in here');
  execFile(devTokenBin, [user, '3600'], (error, stdout) =>
    error ? send(res, 500, 'text/plain', 'dev-token failed') : send(res, 200, 'text/plain', stdout.trim()));
}

server.listen(port, '127.0.0.1', () => console.log(`web: console on http://localhost:${port}`));
