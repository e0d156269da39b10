// REST calls. Every refusal becomes an ApiError carrying the contract's
// {message, error_code, details}, so pages can show exactly what the API said.

import { authHeaders } from './auth.js';

export class ApiError extends Error {
  constructor(status, body) {
    super(body.message);
    this.status = status;
    this.code = body.error_code;
    this.details = body.details ?? null;
  }
}

/** The error body of a non-2xx response (or a stand-in when it is not JSON). */
export async function errorOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body.message === 'string') return new ApiError(response.status, body);
  } catch {
    // not JSON: fall through
  }
  return new ApiError(response.status, {
    message: text.trim() || response.statusText || `HTTP ${response.status}`,
    error_code: `Http${response.status}`,
  });
}

export function networkError(exc) {
  return new ApiError(0, { message: `Cannot reach Stopcock: ${exc.message}`, error_code: 'NetworkError' });
}

export function url(path, query) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== null) params.set(k, v);
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

/** One request; resolves to the response's JSON (or text), throws ApiError. */
export async function call(method, path, { query, body, signal, raw = false } = {}) {
  const headers = { ...authHeaders(), Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(url(path, query), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
    });
  } catch (exc) {
    if (exc.name === 'AbortError') throw exc;
    throw networkError(exc);
  }
  if (!response.ok) throw await errorOf(response);
  if (raw) return response.text();
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export const pipelinePath = (name) => `/v0/pipelines/${encodeURIComponent(name)}`;
