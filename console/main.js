// Entry point: authentication (whoami), the header's live indicator, and hash routing:
// #/ (list), #/new, #/pipelines/<name>[/error|/program].

import { ApiError, call } from './api.js';
import { applyRole, forgetKey, getKey, session, setKey } from './auth.js';
import { createPage } from './create.js';
import { h, put, startTicker } from './dom.js';
import { listPage } from './list.js';
import { pipelinePage } from './pipeline.js';
import { onConnectivity } from './stream.js';

const main = document.getElementById('main');
const authForm = document.getElementById('auth');
const authError = document.getElementById('auth-error');
const keyInput = document.getElementById('api-key');
const forget = document.getElementById('forget-key');
const roleEl = document.getElementById('role');
const conn = document.getElementById('conn');
let leave = null;

function route() {
  leave?.();
  leave = null;
  const hash = location.hash.replace(/^#/, '') || '/';
  const parts = hash.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'new') leave = createPage(main);
  else if (parts[0] === 'pipelines' && parts[1]) leave = pipelinePage(main, parts[1], parts[2]);
  else leave = listPage(main);
  document.title = parts[0] === 'pipelines' && parts[1] ? `${parts[1]} — Stopcock` : 'Stopcock console';
  main.querySelector('h1')?.focus({ preventScroll: true });
}

function showAuthError(error) {
  authError.hidden = false;
  put(authError,
    h('strong', {}, error.status === 403 ? 'Not allowed: ' : 'Not signed in: '),
    error.message, ' ', h('code', { class: 'error-code' }, error.code ?? ''),
    error.status ? ` (HTTP ${error.status})` : '');
}

let retry = 250;

async function signIn() {
  try {
    const who = await call('GET', '/v0/whoami');
    session.role = who.role;
    session.authentication = who.authentication;
    retry = 250;
  } catch (exc) {
    if (!(exc instanceof ApiError) || exc.status === 0 || exc.status >= 500) {
      // Stopcock unreachable (Envoy's 503 while the manager restarts, or no answer at all):
      // not a sign-in problem. Say so and try again, as the streams do.
      put(main, h('p', { role: 'status' },
        `Stopcock is not answering (${exc.message}); trying again…`));
      setTimeout(signIn, retry);
      retry = Math.min(retry * 2, 5000);
      return;
    }
    if (exc.status === 404) {
      // A Stopcock without /v0/whoami: authentication off, everything allowed.
      session.role = 'write';
      session.authentication = false;
    } else {
      // A refused key is not sent again; a 403 (a key without a role) is kept and shown.
      if (exc.status === 401) forgetKey();
      leave?.();
      leave = null;
      put(main, h('p', {}, 'Enter an API key to see the pipelines.'));
      authForm.hidden = false;
      forget.hidden = !getKey();
      showAuthError(exc);
      if (exc.status === 401) keyInput.focus();
      return;
    }
  }
  authError.hidden = true;
  authForm.hidden = !session.authentication || Boolean(getKey());
  forget.hidden = !getKey();
  roleEl.textContent = session.authentication ? `Role: ${session.role}` : '';
  roleEl.hidden = !session.authentication;
  applyRole(document);
  route();
}

authForm.addEventListener('submit', (e) => {
  e.preventDefault();
  setKey(keyInput.value);
  keyInput.value = '';
  signIn();
});
forget.addEventListener('click', () => {
  forgetKey();
  signIn();
});
window.addEventListener('hashchange', () => {
  if (authError.hidden) route();
});
let wasDown = false;
onConnectivity((down, up) => {
  conn.textContent = down ? 'Reconnecting…' : (up ? 'Live' : '');
  conn.className = down ? 'conn down' : 'conn';
  // data-outages counts lost connections: the indicator may say "Reconnecting…" only briefly.
  if (down && !wasDown) conn.dataset.outages = String(Number(conn.dataset.outages ?? 0) + 1);
  wasDown = Boolean(down);
});
startTicker();
signIn();
