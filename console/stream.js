// Long-lived streams (NDJSON watches, followed logs) over fetch(): read line by line,
// reconnect with backoff (0.25 s doubling to 5 s) and tell the header's indicator.

import { authHeaders } from './auth.js';
import { errorOf } from './api.js';

const MIN_BACKOFF = 250;
const MAX_BACKOFF = 5000;

const reconnecting = new Set();
const connected = new Set();
const listeners = new Set();

/**
 * `fn(down, up)` is called whenever the number of streams waiting to reconnect (`down`) or
 * connected (`up`) changes.
 */
export function onConnectivity(fn) {
  listeners.add(fn);
  fn(reconnecting.size, connected.size);
}

function mark(stream, down, up = false) {
  const before = `${reconnecting.size}/${connected.size}`;
  if (down) reconnecting.add(stream);
  else reconnecting.delete(stream);
  if (up) connected.add(stream);
  else connected.delete(stream);
  if (before !== `${reconnecting.size}/${connected.size}`) {
    for (const fn of listeners) fn(reconnecting.size, connected.size);
  }
}

function delay(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

/**
 * Follows `path()` (called again at each connection, so it may resume) and calls
 * `onLine(line)` for every complete line, in the task that read it.
 * `onOpen()` on each connection; `onEnd()` when the server ends the stream (return false to
 * stop following); `onRefused(apiError)` on a 4xx answer (return true to keep retrying).
 * Returns {close()}.
 */
export function follow(path, { onLine, onOpen, onEnd, onRefused }) {
  const controller = new AbortController();
  const { signal } = controller;
  const stream = {};
  let backoff = MIN_BACKOFF;

  async function once() {
    const response = await fetch(path(), { headers: { ...authHeaders() }, signal, cache: 'no-store' });
    if (!response.ok) {
      const error = await errorOf(response);
      if (response.status >= 400 && response.status < 500 && !(onRefused?.(error) ?? false)) {
        return false;
      }
      throw error;
    }
    mark(stream, false, true);
    backoff = MIN_BACKOFF;
    onOpen?.();
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split('\n');
      buffer = lines.pop();
      for (const line of lines) if (line.trim()) onLine(line);
    }
    if (buffer.trim()) onLine(buffer);
    return onEnd?.() ?? true;
  }

  (async () => {
    while (!signal.aborted) {
      let again;
      try {
        again = await once();
      } catch (exc) {
        if (signal.aborted) break;
        again = true;
      }
      if (!again || signal.aborted) break;
      mark(stream, true);
      await delay(backoff, signal);
      backoff = Math.min(backoff * 2, MAX_BACKOFF);
    }
    mark(stream, false);
  })();

  return {
    close() {
      controller.abort();
      mark(stream, false);
    },
  };
}
