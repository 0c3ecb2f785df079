// Every call to the API: same origin (CloudFront in production, scripts/dev locally), the
// session token as a Bearer header, errors as ApiError carrying the API's code, message and field.
import { token } from './auth.js';

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message ?? `The API answered ${status}.`);
    this.status = status;
    this.code = error?.code;
    this.field = error?.field;
  }
}

export async function api(method, path, body) {
  const response = await send(method, path, body, 'application/json');
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, query) => api('GET', withQuery(path, query));
export const post = (path, body) => api('POST', path, body ?? {});
export const patch = (path, body) => api('PATCH', path, body);
export const del = (path) => api('DELETE', path);

/** The raw response (for CSV), after the same error handling. */
export async function send(method, path, body, accept) {
  const headers = { Accept: accept };
  const bearer = await token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, { message: 'Cannot reach the API. Check your connection and try again.' });
  }
  if (!response.ok) {
    const error = await response.json().then((b) => b.error, () => null);
    if (response.status === 401) window.dispatchEvent(new Event('signed-out'));
    throw new ApiError(response.status, error);
  }
  return response;
}

export function withQuery(path, query = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') params.set(key, value);
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

/** A paged list: `items`, then `more()` for the next page while `next_cursor` is set. */
export async function page(path, query = {}) {
  const first = await get(path, query);
  return {
    items: first.items,
    cursor: first.next_cursor,
    async more() {
      const next = await get(path, { ...query, cursor: this.cursor });
      this.cursor = next.next_cursor;
      return next.items;
    },
  };
}
