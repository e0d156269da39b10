// The program editor: a textarea with a line-number gutter. Compile errors get a gutter
// marker and their message beside their line, and a list whose items move the cursor there.

import { h, put } from './dom.js';

export function programEditor({ id = 'program', value = '', label = 'Program (Feldera SQL)' } = {}) {
  const textarea = h('textarea', {
    id, spellcheck: 'false', autocomplete: 'off', wrap: 'off', rows: '16',
    'aria-describedby': `${id}-diagnostics`,
  });
  textarea.value = value;
  const gutter = h('div', { class: 'gutter', 'aria-hidden': 'true' });
  const notes = h('div', { class: 'notes', 'aria-hidden': 'true' });
  const list = h('ul', { id: `${id}-diagnostics`, class: 'diagnostics', 'aria-live': 'polite' });
  const wrapper = h('div', { class: 'editor' }, gutter, h('div', { class: 'code' }, textarea, notes));
  let messages = [];

  function lineHeight() {
    return parseFloat(getComputedStyle(textarea).lineHeight) || 18;
  }

  function render() {
    const count = textarea.value.split('\n').length;
    const byLine = new Map();
    for (const m of messages) {
      const line = m.start_line_number || 1;
      if (!byLine.has(line) || !m.warning) byLine.set(line, m);
    }
    put(gutter, ...Array.from({ length: Math.max(count, 1) }, (_, i) => {
      const m = byLine.get(i + 1);
      return h('div', {
        class: m ? (m.warning ? 'line warn' : 'line err') : 'line',
        title: m ? m.message : undefined,
      }, m ? `${m.warning ? '⚠' : '✖'} ${i + 1}` : String(i + 1));
    }));
    const lh = lineHeight();
    put(notes, ...[...byLine.entries()].map(([line, m]) => {
      const note = h('div', { class: m.warning ? 'note warn' : 'note err' }, m.message);
      note.style.top = `${(line - 1) * lh - textarea.scrollTop + textarea.clientTop + paddingTop()}px`;
      return note;
    }));
    gutter.scrollTop = textarea.scrollTop;
  }

  function paddingTop() {
    return parseFloat(getComputedStyle(textarea).paddingTop) || 0;
  }

  function goTo(m) {
    const lines = textarea.value.split('\n');
    const line = Math.min(Math.max((m.start_line_number || 1) - 1, 0), lines.length - 1);
    let offset = 0;
    for (let i = 0; i < line; i += 1) offset += lines[i].length + 1;
    const column = Math.min(Math.max((m.start_column || 1) - 1, 0), lines[line].length);
    textarea.focus();
    textarea.setSelectionRange(offset + column, offset + column);
    textarea.scrollTop = Math.max(0, line * lineHeight() - textarea.clientHeight / 2);
    render();
  }

  textarea.addEventListener('input', render);
  textarea.addEventListener('scroll', render);
  textarea.addEventListener('keydown', (e) => {
    // Tab indents (Escape first, then Tab, leaves the editor: keyboard users are not trapped).
    if (e.key === 'Tab' && !e.shiftKey && !textarea.dataset.escaped) {
      e.preventDefault();
      textarea.setRangeText('  ', textarea.selectionStart, textarea.selectionEnd, 'end');
      render();
    }
    if (e.key === 'Escape') textarea.dataset.escaped = '1';
    else if (e.key !== 'Tab') delete textarea.dataset.escaped;
  });

  const element = h('div', { class: 'editor-field' },
    h('label', { for: id }, label),
    h('p', { class: 'hint' }, 'Tab indents; press Escape then Tab to leave the editor.'),
    wrapper, list);

  return {
    element,
    textarea,
    get value() {
      return textarea.value;
    },
    set value(v) {
      textarea.value = v;
      render();
    },
    /** Shows Feldera's sql_compilation.messages (or none). */
    setMessages(found) {
      messages = found ?? [];
      put(list, ...messages.map((m) => h('li', { class: m.warning ? 'warn' : 'err' },
        h('button', { type: 'button', class: 'link', onclick: () => goTo(m) },
          `${m.warning ? 'Warning' : 'Error'} at line ${m.start_line_number}, column ${m.start_column}`),
        ': ',
        h('span', {}, `${m.error_type ? `${m.error_type}: ` : ''}${m.message}`),
        m.snippet ? h('pre', { class: 'snippet' }, m.snippet) : null)));
      render();
    },
    render,
  };
}

/** The compiler's messages of a pipeline (SqlError), or a single one for other errors. */
export function programMessages(p) {
  const error = p.program_error;
  if (!error) return [];
  if (error.sql_compilation?.messages?.length) return error.sql_compilation.messages;
  const text = error.rust_compilation?.stderr ?? error.system_error;
  if (p.program_status !== 'Success' && text) {
    return [{ start_line_number: 1, start_column: 1, message: String(text), error_type: p.program_status, warning: false }];
  }
  return [];
}
