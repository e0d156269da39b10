// A pipeline's page: live status from its watch stream (a timeline of transitions),
// checkpoints, errors in full, runtime details, followed logs, ad-hoc queries, the program.

import { ACTIONS, actionButtons, report } from './actions.js';
import { ApiError, call, pipelinePath, url } from './api.js';
import { applyRole } from './auth.js';
import { announce, bytes, clear, h, put, setSince, since } from './dom.js';
import { programEditor, programMessages } from './editor.js';
import { logsPanel } from './logs.js';
import { queryPanel } from './query.js';
import { badge, setBadge } from './status.js';
import { follow } from './stream.js';
import { timeline } from './timeline.js';

export function pipelinePage(main, name, section) {
  const base = pipelinePath(name);
  const notice = h('div', { class: 'notice', id: 'action-notice', hidden: true });
  const status = badge(null);
  const desired = badge(null);
  const statusSince = h('span');
  const storage = badge(null);
  const program = badge(null);
  const errorBody = h('div', { class: 'error-body' });
  const runtimeBody = h('div');
  const checkpoints = h('tbody');
  const events = timeline();
  const logs = logsPanel(base);
  const editor = programEditor({ id: 'program' });
  const description = h('input', { id: 'description', type: 'text', maxlength: '300' });
  const editNotice = h('div', { class: 'notice', hidden: true });
  let current = null;
  let loaded = false;
  let refreshVersion = null;

  const saveButton = h('button', { type: 'submit', class: 'primary', 'data-mutating': true }, 'Save program');
  const editForm = h('form', { class: 'edit', onsubmit: (e) => { e.preventDefault(); save(); } },
    h('label', { for: 'description' }, 'Description'), description,
    editor.element,
    h('div', { class: 'buttons' }, saveButton,
      h('span', { class: 'hint' }, 'The program can change only while the pipeline is stopped.')),
    editNotice);

  clear(main).append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, '← Pipelines')),
    h('div', { class: 'page-head' },
      h('h1', { tabindex: '-1' }, name),
      h('div', { class: 'statusline' },
        h('span', {}, 'Status ', status), h('span', {}, 'desired ', desired),
        h('span', {}, 'since ', statusSince), h('span', {}, 'storage ', storage),
        h('span', {}, 'program ', program))),
    actionButtons(name, Object.keys(ACTIONS), notice, (key) => {
      if (key === 'delete') location.hash = '#/';
    }),
    notice,
    h('section', { id: 'error', tabindex: '-1', 'aria-labelledby': 'error-h' },
      h('h2', { id: 'error-h' }, 'Deployment error'), errorBody),
    h('div', { class: 'columns' },
      h('section', { 'aria-labelledby': 'timeline-h' },
        h('h2', { id: 'timeline-h' }, 'Timeline'),
        h('p', { class: 'hint' },
          'Oldest first: the recent past from the pipeline\'s events, then each transition live.'),
        events.element),
      h('section', { 'aria-labelledby': 'runtime-h' },
        h('h2', { id: 'runtime-h' }, 'Runtime status details'), runtimeBody)),
    h('section', { 'aria-labelledby': 'checkpoints-h' },
      h('h2', { id: 'checkpoints-h' }, 'Checkpoints'),
      h('table', { id: 'checkpoints', class: 'grid' },
        h('thead', {}, h('tr', {}, ['Sequence', 'Size', 'Records', 'Took', 'Created']
          .map((t) => h('th', { scope: 'col' }, t)))),
        checkpoints)),
    h('section', { 'aria-labelledby': 'query-h' },
      h('h2', { id: 'query-h' }, 'Ad-hoc query'), queryPanel(base).element),
    h('section', { 'aria-labelledby': 'logs-h' },
      h('h2', { id: 'logs-h' }, 'Logs'), logs.element),
    h('section', { id: 'program-section', tabindex: '-1', 'aria-labelledby': 'program-h' },
      h('h2', { id: 'program-h' }, 'Program'), editForm),
  );
  applyRole(main);

  function apply(p, gap) {
    const before = current;
    current = p;
    refreshVersion = p.refresh_version;
    setBadge(status, p.deployment_status);
    setBadge(desired, p.deployment_desired_status);
    setBadge(storage, p.storage_status);
    setBadge(program, p.program_status);
    if (before?.deployment_status_since !== p.deployment_status_since) {
      setSince(statusSince, p.deployment_status_since);
    }
    if (before && before.deployment_status !== p.deployment_status) {
      announce(`${p.name} is ${p.deployment_status}`);
    }
    events.add(p, gap);
    // Sections are rebuilt only when their data changed: no churn for readers and selections.
    changed('error', p.deployment_error, renderError);
    changed('runtime', p.deployment_runtime_status_details, renderRuntime);
    changed('checkpoints', p.storage_status_details?.checkpoints ?? [], renderCheckpoints);
    if (!loaded || (!editor.textarea.matches('.dirty') && before?.program_code !== p.program_code)) {
      editor.value = p.program_code ?? '';
      description.value = p.description ?? '';
    }
    editor.setMessages(programMessages(p));
    logs.deployment(p.deployment_id);
    if (!loaded) {
      loaded = true;
      if (section) focusSection(section);
    }
  }

  const shown = {};
  function changed(key, value, render) {
    const json = JSON.stringify(value ?? null);
    if (shown[key] === json) return;
    shown[key] = json;
    render(value);
  }

  function focusSection(which) {
    const target = document.getElementById(which === 'program' ? 'program-section' : which);
    if (target) {
      target.scrollIntoView();
      target.focus();
    }
  }

  function renderError(error) {
    if (!error) {
      put(errorBody, h('p', { class: 'muted' }, 'None.'));
      return;
    }
    put(errorBody,
      h('p', { class: 'notice error' }, h('span', { class: 'message' }, error.message), ' ',
        h('code', { class: 'error-code' }, error.error_code ?? '')),
      error.details ? h('pre', { class: 'details' }, JSON.stringify(error.details, null, 2)) : null);
  }

  function renderRuntime(details) {
    if (!details || !Object.keys(details).length) {
      put(runtimeBody, h('p', { class: 'muted' }, 'None.'));
      return;
    }
    const suspend = details.suspend;
    put(runtimeBody,
      suspend ? h('div', { class: 'notice warn', id: 'suspend' },
        h('strong', {}, `Suspend ${suspend.phase ?? 'in progress'}`),
        suspend.attempts !== undefined ? `, attempt ${suspend.attempts}` : '',
        suspend.waiting_for?.length ? ` — waiting for ${suspend.waiting_for.join(', ')}` : '',
        typeof suspend.retrying_in_secs === 'number'
          ? `; next attempt in ${suspend.retrying_in_secs.toFixed(1)} s` : '',
        suspend.last_error ? h('p', {}, 'Last error: ', h('code', {}, suspend.last_error)) : null) : null,
      h('pre', { class: 'details' }, JSON.stringify(details, null, 2)));
  }

  function renderCheckpoints(list) {
    if (!list.length) {
      put(checkpoints, h('tr', {}, h('td', { colspan: '5', class: 'muted' }, 'No checkpoints.')));
      return;
    }
    const sorted = [...list].sort((a, b) => (b.sequence_number ?? 0) - (a.sequence_number ?? 0));
    put(checkpoints, ...sorted.map((c) => h('tr', { 'data-sequence': c.sequence_number },
      h('td', {}, String(c.sequence_number ?? '—')),
      h('td', { title: `${c.size} bytes` }, bytes(c.size)),
      h('td', {}, String(c.processed_records ?? '—')),
      h('td', {}, typeof c.duration_ms === 'number' ? `${Math.round(c.duration_ms)} ms` : '—'),
      h('td', {}, since(c.created_at)))));
  }

  editor.textarea.addEventListener('input', () => editor.textarea.classList.add('dirty'));

  async function save() {
    if (!current) return;
    const body = {};
    if (description.value !== (current.description ?? '')) body.description = description.value;
    if (editor.value !== (current.program_code ?? '')) body.program_code = editor.value;
    if (!Object.keys(body).length) {
      report(editNotice, 'Nothing changed.');
      return;
    }
    try {
      await call('PATCH', base, { body });
      editor.textarea.classList.remove('dirty');
      report(editNotice, 'Saved; the program compiles now.');
    } catch (exc) {
      if (!(exc instanceof ApiError)) throw exc;
      report(editNotice, exc);
    }
  }

  // The recent past first (the versions the manager keeps, as the pipeline's events), then
  // the stream's present: the stream starts once the past is shown, so the order holds.
  let closed = false;
  let watch = null;
  (async () => {
    try {
      const past = await call('GET', `${base}/events`, { query: { selector: 'status' } });
      if (!closed) for (const e of [...past].reverse()) events.add(fromEvent(e));
    } catch (exc) {
      if (!(exc instanceof ApiError)) throw exc; // a refusal: the stream reports it too
    } finally {
      if (!closed) watch = followWatch();
    }
  })();

  const followWatch = () => follow(() => url(`${base}/watch`, { after_refresh_version: refreshVersion }), {
    onLine(line) {
      const msg = JSON.parse(line);
      apply(msg.pipeline, current !== null && msg.resumed === false);
    },
    onRefused(error) {
      report(notice, error);
      if (error.status === 404) {
        setBadge(status, loaded ? 'Deleted' : 'Not found');
        events.gone();
      }
      return false;
    },
  });

  return () => {
    closed = true;
    watch?.close();
    logs.close();
  };
}

/** An event (Feldera's shape: resources and runtime statuses) as the timeline reads a pipeline. */
function fromEvent(e) {
  const deployed = e.deployment_resources_status === 'Provisioned';
  return {
    deployment_status: deployed
      ? (e.deployment_runtime_status ?? 'Unavailable') : e.deployment_resources_status,
    deployment_desired_status: e.deployment_resources_desired_status === 'Stopped'
      ? 'Stopped' : (e.deployment_runtime_desired_status ?? 'Running'),
    deployment_status_since: e.recorded_at,
    deployment_desired_status_since: e.recorded_at,
  };
}
