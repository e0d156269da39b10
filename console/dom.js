// Small DOM helpers: elements built node by node, never from markup strings (API text stays text),
// and relative times that tick without asking the server anything.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces `el`'s children (null, undefined and false are skipped). */
export function put(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

/** "21 ms", "4.2 s", "12 s", "3 min 4 s", "2 h 5 min", "3 d 4 h". */
export function duration(ms) {
  if (ms < 999.5) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 9950) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export function ago(iso) {
  if (!iso) return '—';
  const ms = Date.now() - Date.parse(iso);
  if (ms < 60000) return `${Math.max(0, Math.round(ms / 1000))} s ago`;
  // Past a minute, minutes are enough: the text (and the layout it costs) changes once a
  // minute, not every second, for each of a long list's rows.
  return `${duration(Math.floor(ms / 60000) * 60000).replace(/ 0 s$/, '')} ago`;
}

/** A <time> showing "12 s ago", the exact timestamp in its title; kept fresh by the ticker. */
export function since(iso) {
  if (!iso) return h('span', {}, '—');
  return h('time', { datetime: iso, title: iso, class: 'ago' }, ago(iso));
}

export function setSince(el, iso) {
  el.replaceChildren(since(iso));
}

/** Bytes as "8.0 KiB". */
export function bytes(n) {
  if (typeof n !== 'number') return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

let ticker = 0;
export function startTicker() {
  if (ticker) return;
  // Only texts that changed are written: an unchanged write still costs the table a layout,
  // and a long task here delays the stream lines waiting behind it (measured: bench.console).
  const set = (el, text) => {
    if (el.textContent !== text) el.textContent = text;
  };
  ticker = setInterval(() => {
    for (const el of document.querySelectorAll('time.ago')) set(el, ago(el.dateTime));
    for (const el of document.querySelectorAll('time.lasting')) {
      set(el, `${duration(Date.now() - Date.parse(el.dateTime))} so far`);
    }
  }, 1000);
}

/** Says `text` to screen readers through the page's polite live region. */
export function announce(text) {
  const region = document.getElementById('announce');
  if (region) region.textContent = text;
}
