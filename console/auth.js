// The API key lives in sessionStorage (gone when the tab closes) and travels only in the
// Authorization header: never in a URL, never logged.

const STORAGE_KEY = 'stopcock.apiKey';

export const session = { role: 'write', authentication: false };

export function getKey() {
  return sessionStorage.getItem(STORAGE_KEY);
}

export function setKey(key) {
  sessionStorage.setItem(STORAGE_KEY, key.trim());
}

export function forgetKey() {
  sessionStorage.removeItem(STORAGE_KEY);
}

export function authHeaders() {
  const key = getKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export function canWrite() {
  return session.role === 'write';
}

/** Disables every mutating control under `root` for a read-only credential. */
export function applyRole(root = document) {
  const readOnly = !canWrite();
  for (const el of root.querySelectorAll('[data-mutating]')) {
    if (el.tagName === 'A') {
      el.toggleAttribute('aria-disabled', readOnly);
      el.classList.toggle('disabled', readOnly);
      if (readOnly) el.setAttribute('tabindex', '-1');
      else el.removeAttribute('tabindex');
    } else {
      el.disabled = readOnly;
      if (readOnly) el.title = 'Your API key has the read role';
    }
  }
}
