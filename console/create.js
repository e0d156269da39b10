// The "new pipeline" page: name, description, program and runtime configuration.

import { report } from './actions.js';
import { ApiError, call } from './api.js';
import { applyRole } from './auth.js';
import { clear, h } from './dom.js';
import { programEditor } from './editor.js';

const EXAMPLE = `CREATE TABLE t (x INT) WITH ('materialized' = 'true');
CREATE MATERIALIZED VIEW v AS SELECT x FROM t;
`;

export function createPage(main) {
  const notice = h('div', { class: 'notice', hidden: true });
  const name = h('input', {
    id: 'new-name', name: 'name', type: 'text', required: true, maxlength: '63', autocomplete: 'off',
    pattern: '([A-Za-z0-9][\\-A-Za-z0-9_]*)?[A-Za-z0-9]', 'aria-describedby': 'new-name-hint',
  });
  const description = h('input', { id: 'new-description', type: 'text', maxlength: '300' });
  const editor = programEditor({ id: 'new-program', value: EXAMPLE });
  const config = h('textarea', { id: 'new-config', rows: '4', spellcheck: 'false', 'aria-describedby': 'new-config-hint' });
  config.value = '{}';

  async function submit(e) {
    e.preventDefault();
    let runtimeConfig;
    try {
      runtimeConfig = JSON.parse(config.value || '{}');
    } catch (exc) {
      report(notice, new ApiError(0, { message: `Runtime configuration is not JSON: ${exc.message}`, error_code: 'InvalidJson' }));
      config.focus();
      return;
    }
    try {
      await call('POST', '/v0/pipelines', {
        body: { name: name.value, description: description.value, program_code: editor.value, runtime_config: runtimeConfig },
      });
      location.hash = `#/pipelines/${encodeURIComponent(name.value)}`;
    } catch (exc) {
      if (!(exc instanceof ApiError)) throw exc;
      report(notice, exc);
    }
  }

  clear(main).append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, '← Pipelines')),
    h('h1', { tabindex: '-1' }, 'New pipeline'),
    h('form', { class: 'edit', id: 'create', onsubmit: submit },
      h('label', { for: 'new-name' }, 'Name'), name,
      h('p', { class: 'hint', id: 'new-name-hint' },
        'Letters, digits, - and _; starts and ends with a letter or digit; at most 63.'),
      h('label', { for: 'new-description' }, 'Description'), description,
      editor.element,
      h('label', { for: 'new-config' }, 'Runtime configuration (JSON)'), config,
      h('p', { class: 'hint', id: 'new-config-hint' },
        'For example {"fault_tolerance": {"model": "at_least_once", "checkpoint_interval_secs": 60}}.'),
      h('div', { class: 'buttons' },
        h('button', { type: 'submit', class: 'primary', 'data-mutating': true }, 'Create pipeline')),
      notice));
  applyRole(main);
  return () => {};
}
