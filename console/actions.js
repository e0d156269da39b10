// Lifecycle actions. The API decides what is allowed: a refusal is shown with its
// message and error_code. Consequential actions ask first, naming what is lost.

import { ApiError, call, pipelinePath } from './api.js';
import { announce, h, put } from './dom.js';

const LOSS = 'rows ingested since the last checkpoint are lost';

export const ACTIONS = {
  start: { label: 'Start', path: 'start', query: { initial: 'running' } },
  'start-paused': { label: 'Start paused', path: 'start', query: { initial: 'paused' } },
  pause: { label: 'Pause', path: 'pause' },
  resume: { label: 'Resume', path: 'resume' },
  stop: {
    label: 'Stop',
    path: 'stop',
    query: { force: 'false' },
    title: 'Suspend: checkpoint, then stop; a later start resumes from here',
  },
  'force-stop': {
    label: 'Force stop',
    path: 'stop',
    query: { force: 'true' },
    danger: true,
    confirm: (name) => ({
      title: `Force stop ${name}?`,
      text: `The runtime is killed at once, without a checkpoint: ${LOSS}. A later start resumes from the latest checkpoint.`,
      ok: 'Force stop',
    }),
  },
  checkpoint: { label: 'Checkpoint', path: 'checkpoint' },
  clear: {
    label: 'Clear storage',
    path: 'clear',
    danger: true,
    confirm: (name) => ({
      title: `Clear the storage of ${name}?`,
      text: 'Every checkpoint and all of its state are deleted; the next start begins empty. This cannot be undone.',
      ok: 'Clear storage',
    }),
  },
  'dismiss-error': { label: 'Dismiss error', path: 'dismiss_error' },
  delete: {
    label: 'Delete',
    method: 'DELETE',
    danger: true,
    confirm: (name) => ({
      title: `Delete ${name}?`,
      text: 'The pipeline and its program are deleted. This cannot be undone.',
      ok: 'Delete',
    }),
  },
};

/** Asks with the page's <dialog>; resolves true on confirmation. */
export function confirmAction({ title, text, ok }) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = ok;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
    document.getElementById('confirm-cancel').focus();
  });
}

/** Shows an outcome in a notice element: errors with their error_code and details. */
export function report(notice, outcome) {
  notice.hidden = false;
  if (outcome instanceof ApiError) {
    notice.className = 'notice error';
    notice.setAttribute('role', 'alert');
    const details = outcome.details ? h('pre', { class: 'details' }, JSON.stringify(outcome.details, null, 2)) : null;
    put(notice,
      h('strong', {}, outcome.status ? `Refused (${outcome.status}): ` : 'Failed: '),
      h('span', { class: 'message' }, outcome.message),
      ' ',
      h('code', { class: 'error-code' }, outcome.code ?? ''),
      details,
    );
  } else {
    notice.className = 'notice ok';
    notice.setAttribute('role', 'status');
    put(notice, String(outcome));
  }
}

export async function runAction(name, key, notice) {
  const action = ACTIONS[key];
  if (action.confirm && !(await confirmAction(action.confirm(name)))) return false;
  try {
    const path = action.path ? `${pipelinePath(name)}/${action.path}` : pipelinePath(name);
    const result = await call(action.method ?? 'POST', path, { query: action.query });
    const extra = result && result.checkpoint_sequence_number !== undefined
      ? ` (checkpoint ${result.checkpoint_sequence_number})` : '';
    report(notice, `${action.label}: accepted for ${name}${extra}.`);
    announce(`${action.label} accepted for ${name}`);
    return true;
  } catch (exc) {
    if (!(exc instanceof ApiError)) throw exc;
    report(notice, exc);
    return false;
  }
}

/** A row of action buttons; `keys` picks which; `done(key)` after an accepted action. */
export function actionButtons(name, keys, notice, done = () => {}) {
  return h('div', { class: 'actions', role: 'group', 'aria-label': `Actions for ${name}` },
    keys.map((key) => {
      const a = ACTIONS[key];
      return h('button', {
        type: 'button',
        class: a.danger ? 'danger' : '',
        'data-action': key,
        'data-mutating': true,
        title: a.title,
        'aria-label': `${a.label} ${name}`,
        onclick: async () => {
          if (await runAction(name, key, notice)) done(key);
        },
      }, a.label);
    }));
}
