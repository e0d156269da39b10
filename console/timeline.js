// The timeline: one <li data-status data-desired> per transition seen on the watch stream,
// oldest first, each with when it began and how long it lasted.

import { duration, h, put, since } from './dom.js';
import { badge } from './status.js';

export function timeline() {
  const element = h('ol', { id: 'timeline', class: 'timeline' });
  let last = null; // {status, desired, at, li, lasted}

  /** `gap`: versions may have been missed before `p` (a reconnect that could not resume). */
  function add(p, gap = false) {
    const status = p.deployment_status;
    const desired = p.deployment_desired_status;
    if (last && last.status === status && last.desired === desired) return;
    const at = last && last.status === status
      ? p.deployment_desired_status_since : p.deployment_status_since;
    const lasted = h('span', { class: 'lasted' });
    const li = h('li', { 'data-status': status, 'data-desired': desired, class: gap ? 'after-gap' : null },
      gap ? h('span', { class: 'hint' }, '(transitions may be missing before this: the stream reconnected) ') : null,
      badge(status), ' → ', badge(desired, 'desired'), ' ', since(at), ' ', lasted);
    if (last) {
      const ms = Date.parse(at) - Date.parse(last.at);
      put(last.lasted, `lasted ${duration(ms)}`);
    }
    put(lasted, h('time', { class: 'lasting', datetime: at, title: at }, ''));
    lasted.firstChild.textContent = `${duration(Date.now() - Date.parse(at))} so far`;
    element.append(li);
    last = { status, desired, at, li, lasted };
  }

  function gone() {
    if (last) put(last.lasted, '(pipeline deleted)');
  }

  return { element, add, gone };
}
