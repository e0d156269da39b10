// Ad-hoc queries: GET .../query?sql=...&format=json answers newline-delimited JSON rows.

import { ApiError, call, url } from './api.js';
import { h, put } from './dom.js';
import { report } from './actions.js';

export function queryPanel(base) {
  const sql = h('textarea', { id: 'query-sql', rows: '3', spellcheck: 'false' });
  const notice = h('div', { class: 'notice', hidden: true });
  // data-answers counts finished queries (answers or refusals): what tests wait on.
  const results = h('div', { class: 'results', id: 'query-answer', 'data-answers': '0' });
  const answered = () => {
    results.dataset.answers = String(Number(results.dataset.answers) + 1);
  };
  const form = h('form', {
    class: 'query',
    onsubmit: async (e) => {
      e.preventDefault();
      put(results, h('p', { class: 'hint', role: 'status' }, 'Running…'));
      notice.hidden = true;
      try {
        const text = await call('GET', url(`${base}/query`, { sql: sql.value, format: 'json' }), { raw: true });
        render(text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l)));
        answered();
      } catch (exc) {
        if (!(exc instanceof ApiError)) throw exc;
        put(results);
        report(notice, exc);
        answered();
      }
    },
  },
  h('label', { for: 'query-sql' }, 'SQL (SELECT from a materialized table or view, or INSERT … VALUES)'),
  sql,
  h('div', { class: 'buttons' }, h('button', { type: 'submit' }, 'Run query')));
  sql.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) form.requestSubmit();
  });

  function render(rows) {
    const columns = [];
    for (const row of rows) for (const k of Object.keys(row)) if (!columns.includes(k)) columns.push(k);
    put(results,
      h('p', { class: 'hint', role: 'status' }, `${rows.length} row${rows.length === 1 ? '' : 's'}.`),
      rows.length ? h('table', { id: 'query-results', class: 'grid' },
        h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rows.map((row) => h('tr', {}, columns.map((c) => h('td', {}, cell(row[c]))))))) : null);
  }

  return { element: h('div', {}, form, notice, results) };
}

function cell(v) {
  if (v === null || v === undefined) return 'NULL';
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}
