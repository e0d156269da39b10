// Status badges: a colour per kind of status, always with the status's name as text.

import { h } from './dom.js';

const KIND = {
  Running: 'ok',
  Paused: 'paused',
  Standby: 'paused',
  Stopped: 'idle',
  Cleared: 'idle',
  Provisioning: 'moving',
  Initializing: 'moving',
  Bootstrapping: 'moving',
  Replaying: 'moving',
  Stopping: 'moving',
  Suspended: 'moving',
  Clearing: 'moving',
  AwaitingApproval: 'paused',
  InUse: 'ok',
  Unavailable: 'bad',
  SqlError: 'bad',
  RustError: 'bad',
  SystemError: 'bad',
  Success: 'ok',
};

export const DEPLOYMENT_STATUSES = [
  'Stopped', 'Provisioning', 'Initializing', 'Bootstrapping', 'Replaying', 'AwaitingApproval',
  'Paused', 'Running', 'Suspended', 'Unavailable', 'Stopping',
];

export function kind(status) {
  return KIND[status] ?? 'moving';
}

export function badge(status, label) {
  return h('span', { class: `badge ${kind(status)}` }, label ? `${label}: ${status ?? '—'}` : status ?? '—');
}

export function setBadge(el, status) {
  el.className = `badge ${kind(status)}`;
  el.textContent = status ?? '—';
}

export function hasProgramError(p) {
  return ['SqlError', 'RustError', 'SystemError'].includes(p.program_status);
}
