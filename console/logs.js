// The runtime's log, followed live. The stream ends when the runtime process is gone; a new
// deployment (another deployment_id) follows again (the whole log is resent, so it restarts).

import { h } from './dom.js';
import { follow } from './stream.js';

const MAX_LINES = 5000;

export function logsPanel(base) {
  const pre = h('pre', { id: 'logs', class: 'logs', tabindex: '0', 'aria-label': 'Runtime log' });
  const state = h('p', { class: 'hint', role: 'status' }, 'Waiting for the log…');
  const autoscroll = h('input', { id: 'logs-follow', type: 'checkbox', checked: true });
  const element = h('div', {}, h('div', { class: 'toolbar' }, autoscroll,
    h('label', { for: 'logs-follow' }, 'Scroll to new lines'), state), pre);
  let stream = null;
  let following = undefined;
  let active = false;

  function start() {
    stream?.close();
    active = true;
    stream = follow(() => `${base}/logs?follow=true`, {
      onOpen() {
        pre.replaceChildren();
        state.textContent = 'Following.';
      },
      onLine(line) {
        pre.append(`${line}\n`);
        while (pre.childNodes.length > MAX_LINES) pre.firstChild.remove();
        if (autoscroll.checked) pre.scrollTop = pre.scrollHeight;
      },
      onEnd() {
        active = false;
        state.textContent = 'The runtime is not running; the log follows again at the next start.';
        return false;
      },
      onRefused(error) {
        active = false;
        state.textContent = `${error.message} (${error.code})`;
        return false;
      },
    });
  }

  return {
    element,
    /** Called with each pipeline version: a new deployment restarts the stream. */
    deployment(id) {
      if (id === following && (active || !id)) return;
      following = id;
      start();
    },
    close() {
      stream?.close();
    },
  };
}
