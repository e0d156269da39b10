// The pipelines list: one /v0/watch stream, rows keyed by pipeline id, updated in the same
// task that parses each line (the data-* attributes are what benchmarks and tests read).

import { actionButtons } from './actions.js';
import { applyRole } from './auth.js';
import { announce, clear, h, put, setSince } from './dom.js';
import { DEPLOYMENT_STATUSES, badge, hasProgramError, setBadge } from './status.js';
import { follow } from './stream.js';

const ROW_ACTIONS = ['start', 'pause', 'resume', 'stop', 'force-stop'];

export function listPage(main) {
  const rows = new Map(); // id -> {tr, cells, name}
  let seen = new Set(); // ids sent since the current connection's snapshot began
  let synced = false;

  const notice = h('div', { class: 'notice', id: 'action-notice', hidden: true });
  const nameFilter = h('input', { id: 'filter-name', type: 'search', autocomplete: 'off' });
  const statusFilter = h('select', { id: 'filter-status' },
    h('option', { value: '' }, 'Any status'),
    DEPLOYMENT_STATUSES.map((s) => h('option', { value: s }, s)),
    h('option', { value: 'error' }, 'With an error'));
  const tbody = h('tbody');
  const empty = h('p', { class: 'empty', hidden: true }, 'No pipelines match.');
  const loading = h('p', { class: 'empty', role: 'status' }, 'Loading pipelines…');

  clear(main).append(
    h('div', { class: 'page-head' },
      h('h1', { tabindex: '-1' }, 'Pipelines'),
      h('a', { class: 'button primary', href: '#/new', 'data-mutating': true }, 'New pipeline')),
    h('form', { class: 'filters', role: 'search', onsubmit: (e) => e.preventDefault() },
      h('label', { for: 'filter-name' }, 'Filter by name'), nameFilter,
      h('label', { for: 'filter-status' }, 'Status'), statusFilter),
    notice,
    h('table', { id: 'pipelines', class: 'grid' },
      h('caption', { class: 'visually-hidden' }, 'Pipelines, updated live'),
      h('thead', {}, h('tr', {},
        ['Name', 'Status', 'Desired', 'Since', 'Storage', 'Program', 'Error', 'Actions']
          .map((t) => h('th', { scope: 'col' }, t)))),
      tbody),
    loading,
    empty,
  );
  applyRole(main);

  function matches(row) {
    const text = nameFilter.value.trim().toLowerCase();
    const status = statusFilter.value;
    const p = row.pipeline;
    if (text && !p.name.toLowerCase().includes(text)) return false;
    if (status === 'error') return Boolean(p.deployment_error) || hasProgramError(p);
    return !status || p.deployment_status === status;
  }

  function refilter() {
    for (const row of rows.values()) row.tr.hidden = !matches(row);
    showEmpty();
  }

  function showEmpty() {
    let shown = 0;
    for (const row of rows.values()) if (!row.tr.hidden) shown += 1;
    empty.hidden = !synced || shown > 0;
    empty.textContent = rows.size ? 'No pipelines match the filter.' : 'No pipelines yet.';
  }
  nameFilter.addEventListener('input', refilter);
  statusFilter.addEventListener('change', refilter);

  function newRow(p) {
    const cells = {
      // A long name is cut to its column (fixed layout): the title shows it whole.
      name: h('td', {}, h('a', { href: `#/pipelines/${encodeURIComponent(p.name)}`, title: p.name }, p.name)),
      status: h('td', {}, badge(p.deployment_status)),
      desired: h('td', {}, badge(p.deployment_desired_status)),
      since: h('td'),
      storage: h('td'),
      program: h('td'),
      error: h('td'),
      actions: h('td', {}, actionButtons(p.name, ROW_ACTIONS, notice)),
    };
    const tr = h('tr', { 'data-id': p.id }, Object.values(cells));
    applyRole(tr);
    insertSorted(tr, p.name);
    return { tr, cells, pipeline: p };
  }

  function insertSorted(tr, name) {
    const after = [...tbody.children].find((other) => other !== tr && other.dataset.pipeline > name);
    tbody.insertBefore(tr, after ?? null);
  }

  function update(p) {
    seen.add(p.id);
    let row = rows.get(p.id);
    const before = row?.pipeline;
    if (!row) {
      row = newRow(p);
      rows.set(p.id, row);
    }
    row.pipeline = p;
    const { tr, cells } = row;
    // The attributes first, synchronously: what a watcher of the DOM measures.
    tr.dataset.pipeline = p.name;
    tr.dataset.status = p.deployment_status;
    tr.dataset.desired = p.deployment_desired_status;
    if (before && before.name !== p.name) {
      cells.name.firstChild.textContent = p.name;
      cells.name.firstChild.title = p.name;
      cells.name.firstChild.href = `#/pipelines/${encodeURIComponent(p.name)}`;
      put(cells.actions, actionButtons(p.name, ROW_ACTIONS, notice)); // they act by name
      applyRole(cells.actions);
      insertSorted(tr, p.name);
    }
    setBadge(cells.status.firstChild, p.deployment_status);
    setBadge(cells.desired.firstChild, p.deployment_desired_status);
    if (!before || before.deployment_status_since !== p.deployment_status_since) {
      setSince(cells.since, p.deployment_status_since);
    }
    // Cells are rebuilt only when what they show changed: each rebuild costs the row a
    // restyle and repaint, and most writes of a pipeline change one or two statuses.
    if (before?.storage_status !== p.storage_status || !before) {
      put(cells.storage, badge(p.storage_status));
    }
    if (before?.program_status !== p.program_status || !before) {
      put(cells.program, badge(p.program_status));
    }
    if (!before || errorKey(before) !== errorKey(p)) put(cells.error, errorBadge(p));
    tr.hidden = !matches(row);
    if (before && before.deployment_status !== p.deployment_status) {
      announce(`${p.name}: ${p.deployment_status}`);
    }
  }

  function remove(id) {
    const row = rows.get(id);
    if (!row) return;
    row.tr.remove();
    rows.delete(id);
  }

  const stream = follow(() => '/v0/watch', {
    onOpen() {
      seen = new Set();
      synced = false;
    },
    onLine(line) {
      const msg = JSON.parse(line);
      if (msg.pipeline) update(msg.pipeline);
      else if (msg.deleted) remove(msg.deleted.id);
      else if (msg.synced) {
        // A fresh snapshot: what it did not mention is gone.
        for (const id of [...rows.keys()]) if (!seen.has(id)) remove(id);
        synced = true;
        loading.hidden = true;
        refilter();
        return;
      }
      if (synced) showEmpty();
    },
    onRefused(error) {
      loading.hidden = true;
      notice.hidden = false;
      notice.className = 'notice error';
      notice.setAttribute('role', 'alert');
      notice.textContent = `${error.message} (${error.code})`;
      return false;
    },
  });
  return () => stream.close();
}

/** What the error cell depends on. */
function errorKey(p) {
  return JSON.stringify([p.name, p.deployment_error, p.program_status]);
}

function errorBadge(p) {
  const target = `#/pipelines/${encodeURIComponent(p.name)}`;
  if (p.deployment_error) {
    return h('a', {
      class: 'badge bad', href: `${target}/error`, title: p.deployment_error.message,
    }, `Error: ${p.deployment_error.error_code ?? 'deployment'}`);
  }
  if (hasProgramError(p)) {
    return h('a', { class: 'badge bad', href: `${target}/program` }, `Program: ${p.program_status}`);
  }
  return '';
}
