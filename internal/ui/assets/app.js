// negotiate node dashboard. Every action calls the node's control API under
// /api (the same routes the CLI uses); nothing here decides anything.
'use strict';

const csrf = document.querySelector('meta[name=csrf]').content;
const $ = (sel, root) => (root || document).querySelector(sel);
let me = null;            // this node's identity
let current = 'inbox';    // page shown
let chainBefore = 0;      // chain page cursor (0 = newest)
let chainHistory = [];    // cursors of pages seen, for "Newest"
let selectedSession = ''; // sessions page detail
const watched = new Set(); // sessions proposed from this page, shown in progress

class APIError extends Error {
  constructor(msg, kind, status) { super(msg); this.kind = kind; this.status = status; }
}

async function api(method, path, body) {
  const opt = { method, headers: { 'X-CSRF-Token': csrf }, credentials: 'same-origin' };
  if (body !== undefined) { opt.headers['Content-Type'] = 'application/json'; opt.body = JSON.stringify(body); }
  let r;
  try { r = await fetch('/api' + path, opt); } catch (e) { throw new APIError('the node does not answer (' + e.message + ')', 'unavailable', 0); }
  if (r.status === 401) { throw new APIError('not logged in: open the login URL the node printed at start', 'unauthorized', 401); }
  const ct = r.headers.get('Content-Type') || '';
  if (!ct.startsWith('application/json')) {
    if (!r.ok) throw new APIError(r.status + ' ' + r.statusText, 'internal', r.status);
    return r;
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { /* not JSON */ }
  if (!r.ok) throw new APIError((data && data.error) || (r.status + ' ' + r.statusText), data && data.kind, r.status);
  return data;
}

// h builds an element: h('div', {class: 'x'}, 'text', child...). Text is
// never parsed as HTML.
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) {
    if (k === undefined || k === null || k === false) continue;
    el.append(k instanceof Node ? k : String(k));
  }
  return el;
}

function short(id) { return id ? (id.length > 16 ? id.slice(0, 8) + '…' + id.slice(-4) : id) : ''; }
function agentLabel(id) { return !id ? 'nobody' : (me && id === me.agent_id ? 'you' : short(id)); }
function when(ms) { return ms ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '—'; }
function ago(ms) {
  if (!ms) return '';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? s + ' s ago' : s < 3600 ? Math.round(s / 60) + ' min ago' : Math.round(s / 3600) + ' h ago';
}
function termsText(t) { return t ? JSON.stringify(t) : '—'; }

function banner(msg, info) {
  const b = $('#banner');
  if (!msg) { b.hidden = true; return; }
  b.textContent = msg; b.className = info ? 'info' : ''; b.hidden = false;
  if (info) setTimeout(() => { if (b.textContent === msg) b.hidden = true; }, 4000);
}
function showError(where, err) {
  const msg = err instanceof Error ? err.message : String(err);
  if (where) { where.textContent = msg; where.className = 'error'; } else banner(msg);
}

// Errors of actions in views that live updates rebuild (a session's detail,
// a chain record) are kept by key, so the next rebuild shows them again.
const stickyErrors = new Map();
function errorBox(key) {
  const el = h('div', { class: 'error', role: 'alert', dataset: { errorKey: key } });
  el.textContent = stickyErrors.get(key) || '';
  return el;
}
function stickError(el, e) {
  const msg = e instanceof Error ? e.message : String(e);
  stickyErrors.set(el.dataset.errorKey, msg);
  el.textContent = msg;
}
function unstickError(el) { stickyErrors.delete(el.dataset.errorKey); el.textContent = ''; }

// ---- terms ----

// termValue reads a value as the CLI does: integers, decimals, true/false,
// anything else text; 'quoted' or "quoted" stays text.
function termValue(v) {
  v = v.trim();
  if (v.length >= 2 && ((v[0] === "'" && v.endsWith("'")) || (v[0] === '"' && v.endsWith('"')))) return v.slice(1, -1);
  if (/^-?\d+$/.test(v)) return Number(v);
  if (/^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(v)) return Number(v);
  if (v === 'true') return true;
  if (v === 'false') return false;
  return v;
}
function termRow(container, k, v) {
  const row = h('div', { class: 'row' },
    h('input', { class: 'term-key', placeholder: 'key', value: k || '', 'aria-label': 'term key' }),
    h('input', { class: 'term-value', placeholder: 'value', value: v === undefined ? '' : (typeof v === 'string' && /^(-?[\d.]+|true|false)$/.test(v) ? "'" + v + "'" : (typeof v === 'object' ? JSON.stringify(v) : String(v))), 'aria-label': 'term value' }),
    h('button', { type: 'button', class: 'danger', title: 'remove', onclick: () => row.remove() }, '×'));
  container.append(row);
}
// readRows returns the terms of key/value rows or throws a clear error.
function readRows(container) {
  const terms = {};
  for (const row of container.querySelectorAll('.row')) {
    const k = row.querySelector('.term-key').value.trim();
    const v = row.querySelector('.term-value').value;
    if (!k && !v.trim()) continue;
    if (!k) throw new Error('a term has a value but no key');
    if (k in terms) throw new Error('term "' + k + '" is given twice');
    terms[k] = termValue(v);
  }
  if (!Object.keys(terms).length) throw new Error('give at least one term');
  return terms;
}
function termsEditor(initial) {
  const rows = h('div', { class: 'rows' });
  const entries = Object.entries(initial || {});
  if (!entries.length) termRow(rows); else for (const [k, v] of entries) termRow(rows, k, v);
  const add = h('button', { type: 'button', class: 'secondary', onclick: () => termRow(rows) }, '+ term');
  return { el: h('div', {}, rows, add), read: () => readRows(rows) };
}

// ---- inbox ----

async function loadInbox() {
  const [props, msgs] = await Promise.all([api('GET', '/v1/proposals'), api('GET', '/v1/inbox')]);
  // Keep the cards already shown (a counter being edited survives a live
  // update); add new ones, drop decided ones.
  const box = $('#proposals');
  const shown = {};
  for (const c of box.querySelectorAll('.proposal')) shown[c.dataset.key] = c;
  const cards = props.map(p => {
    const key = p.session + '|' + p.kind + '|' + p.round;
    if (shown[key]) return shown[key];
    const c = proposalCard(p);
    c.dataset.key = key;
    return c;
  });
  setBadge(props.length);
  box.replaceChildren(...cards);
  if (!props.length) box.append(h('p', { class: 'muted' }, 'Nothing waits for a decision.'));
  const list = $('#messages');
  list.replaceChildren();
  if (!msgs.length) list.append(h('p', { class: 'muted' }, 'No direct messages yet.'));
  for (const m of msgs.slice().reverse()) {
    list.append(h('div', { class: 'card message' },
      h('div', { class: 'muted' }, when(m.received_at), ' from ', h('span', { class: 'mono', title: m.from }, agentLabel(m.from)), m.content_type !== 'text/plain' ? ' (' + m.content_type + ')' : ''),
      h('div', {}, m.message)));
  }
}

function setBadge(n) { const b = $('#badge'); b.textContent = n; b.hidden = n === 0; }

function proposalCard(p) {
  const err = h('div', { class: 'error', role: 'alert' });
  const title = p.kind === 'counter' ? 'Counter from ' : p.kind === 'offer' ? 'Signed offer from ' : 'Proposal from ';
  const card = h('div', { class: 'card proposal', dataset: { session: p.session, kind: p.kind, round: p.round } },
    h('h3', {}, title, h('span', { class: 'mono', title: p.from }, agentLabel(p.from))),
    h('dl', { class: 'kv' },
      h('dt', {}, 'session'), h('dd', { class: 'mono' }, p.session),
      h('dt', {}, 'round'), h('dd', { class: 'round' }, p.round),
      h('dt', {}, 'terms'), h('dd', { class: 'mono terms' }, termsText(p.terms)),
      h('dt', {}, 'parties'), h('dd', {}, p.parties.map(x => h('span', { class: 'mono', title: x }, agentLabel(x) + ' '))),
      h('dt', {}, 'deadline'), h('dd', {}, p.deadline ? when(p.deadline) : '—')));
  const decide = async (body, btns) => {
    err.textContent = '';
    btns.forEach(b => b.disabled = true);
    try {
      await api('POST', '/v1/sessions/' + encodeURIComponent(p.session) + '/decide', body);
      banner(body.action + ': sent for session ' + short(p.session), true);
      refresh();
    } catch (e) { showError(err, e); btns.forEach(b => b.disabled = false); }
  };
  const reason = h('input', { class: 'reason', placeholder: 'reason (optional)', maxlength: 200 });
  const accept = h('button', { class: 'act-accept' }, p.kind === 'counter' ? 'Accept counter' : 'Accept');
  const reject = h('button', { class: 'act-reject danger' }, 'Reject');
  const counter = h('button', { class: 'act-counter secondary' }, 'Counter…');
  const all = [accept, reject, counter];
  accept.addEventListener('click', () => decide({ action: 'accept' }, all));
  reject.addEventListener('click', () => decide({ action: 'reject', reason: reason.value }, all));
  const actions = h('div', { class: 'actions' }, accept, p.kind !== 'offer' ? counter : null, reject, reason);
  counter.addEventListener('click', () => {
    counter.disabled = true;
    const ed = termsEditor(p.terms);
    const send = h('button', { class: 'act-send-counter' }, 'Send counter');
    send.addEventListener('click', () => {
      let terms;
      try { terms = ed.read(); } catch (e) { showError(err, e); return; }
      decide({ action: 'counter', terms }, all.concat([send]));
    });
    card.insertBefore(h('div', { class: 'counter-editor' }, h('h3', {}, 'Your counter terms'), ed.el, h('div', { class: 'actions' }, send)), err);
  });
  card.append(actions, err);
  return card;
}

$('#send-form').addEventListener('submit', async ev => {
  ev.preventDefault();
  const f = ev.target, out = $('#send-result');
  out.textContent = 'sending…'; out.className = 'result muted';
  try {
    const r = await api('POST', '/v1/send', { to: f.to.value.trim(), message: f.message.value });
    if (r.accepted) { out.textContent = 'delivered in ' + r.rtt_ms.toFixed(1) + ' ms; reply: ' + r.reply; out.className = 'result ok'; f.message.value = ''; }
    else { out.textContent = 'refused by the receiver: ' + r.reason; out.className = 'result bad'; }
  } catch (e) { showError(out, e); }
});

// ---- propose ----

const proposeRows = $('#term-rows');
termRow(proposeRows, 'item', 'book'); termRow(proposeRows, 'price', 12);
$('#add-term').addEventListener('click', () => termRow(proposeRows));
for (const r of document.querySelectorAll('input[name=termsmode]')) {
  r.addEventListener('change', () => {
    const json = $('input[name=termsmode]:checked').value === 'json';
    if (json) { try { $('#terms-json').value = JSON.stringify(readRows(proposeRows), null, 1); } catch (e) { /* keep the text */ } }
    $('#terms-json').hidden = !json; proposeRows.hidden = json; $('#add-term').hidden = json;
  });
}

$('#propose-form').addEventListener('submit', async ev => {
  ev.preventDefault();
  const f = ev.target;
  const box = $('#progress');
  const err = $('#propose-error');
  err.textContent = '';
  try {
    const withIDs = f.with.value.split(/[\s,]+/).filter(Boolean);
    if (!withIDs.length) throw new Error('name at least one agent to propose to');
    let terms;
    if ($('input[name=termsmode]:checked').value === 'json') {
      try { terms = JSON.parse($('#terms-json').value); } catch (e) { throw new Error('the terms are not valid JSON: ' + e.message); }
      if (!terms || typeof terms !== 'object' || Array.isArray(terms)) throw new Error('the terms must be one JSON object, e.g. {"price": 10}');
    } else terms = readRows(proposeRows);
    const secs = Number(f.timeout.value);
    if (!(secs > 0 && secs <= 300)) throw new Error('the timeout must be between 1 and 300 seconds');
    const offer = f.kind.value === 'offer';
    const r = await api('POST', '/v1/sessions', { with: withIDs, terms, timeout_ms: Math.round(secs * 1000), max_rounds: 0, offer });
    watched.add(r.session);
    box.prepend(h('div', { class: 'card progress', dataset: { session: r.session } }, h('h3', {}, 'Session ', h('span', { class: 'mono' }, r.session)), h('div', { class: 'state' }, 'proposed…')));
    refreshProgress();
  } catch (e) { showError(err, e); }
});

async function refreshProgress() {
  for (const card of document.querySelectorAll('#progress .progress')) {
    const id = card.dataset.session;
    try {
      const s = await api('GET', '/v1/sessions/' + encodeURIComponent(id));
      const state = s.state || s.phase;
      card.dataset.state = state;
      card.querySelector('.state').replaceChildren(
        h('span', { class: 'pill ' + (s.state || '') }, state), ' round ', s.round, ' · terms ', h('span', { class: 'mono' }, termsText(s.terms)),
        s.state ? '' : h('span', {}, ' · waiting on ', (s.waiting_on || []).map(agentLabel).join(', ') || 'nobody', ' since ', when(s.since)),
        s.record_hash ? h('div', {}, 'record ', h('span', { class: 'mono record-hash' }, s.record_hash)) : '',
        s.reason ? h('div', { class: 'muted' }, 'reason: ', s.reason) : '');
    } catch (e) { showError(card.querySelector('.state'), e); }
  }
}

// ---- sessions ----

async function loadSessions() {
  const [list, st] = await Promise.all([api('GET', '/v1/sessions?all=1'), api('GET', '/v1/chain/status')]);
  $('#lock-line').replaceChildren(st.lock ? h('span', { class: 'warn' }, 'chain locked by session ', h('span', { class: 'mono' }, st.lock.session), ' since ', when(st.lock.since)) : 'chain lock free');
  const tb = $('#sessions-table tbody');
  tb.replaceChildren();
  list.sort((a, b) => (b.started || 0) - (a.started || 0));
  if (!list.length) tb.append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No sessions yet.')));
  for (const s of list) {
    const state = s.state || s.phase;
    const tr = h('tr', { class: 'clickable' + (s.session === selectedSession ? ' selected' : ''), dataset: { session: s.session } },
      h('td', { class: 'mono' }, short(s.session)), h('td', {}, s.role), h('td', {}, h('span', { class: 'pill ' + (s.state || '') }, state)),
      h('td', {}, s.round), h('td', {}, s.state ? '—' : (s.waiting_on || []).map(agentLabel).join(', ') || 'nobody'), h('td', {}, when(s.since), ' ', h('span', { class: 'muted' }, ago(s.since))));
    tr.addEventListener('click', () => { selectedSession = s.session; loadSessions().catch(e => banner(e.message)); });
    tb.append(tr);
  }
  if (selectedSession) await loadSessionDetail(selectedSession);
}

async function loadSessionDetail(id) {
  const box = $('#session-detail');
  try {
    const [s, evs] = await Promise.all([api('GET', '/v1/sessions/' + encodeURIComponent(id)), api('GET', '/v1/events/recent?session=' + encodeURIComponent(id))]);
    const tl = [{ at: s.started, text: 'started as ' + s.role + ' (initiator ' + agentLabel(s.initiator) + ')' }];
    for (const e of evs) tl.push({ at: e.at, text: e.kind + (e.phase ? ' → ' + e.phase : '') + (e.round ? ', round ' + e.round : '') + (e.from ? ', from ' + agentLabel(e.from) : '') + (e.reason ? ': ' + e.reason : '') });
    for (const [p, a] of Object.entries(s.last_messages || {})) tl.push({ at: a.At, text: 'last message from ' + agentLabel(p) + ': ' + a.Type });
    tl.sort((a, b) => a.at - b.at);
    box.replaceChildren(h('div', { class: 'card', dataset: { session: id } },
      h('h3', {}, 'Session ', h('span', { class: 'mono' }, s.session)),
      h('dl', { class: 'kv' },
        h('dt', {}, 'state'), h('dd', {}, h('span', { class: 'pill ' + (s.state || '') }, s.state || s.phase), ' since ', when(s.since)),
        h('dt', {}, 'round'), h('dd', {}, s.round, ' of ', s.max_rounds),
        h('dt', {}, 'terms'), h('dd', { class: 'mono' }, termsText(s.terms)),
        h('dt', {}, 'parties'), h('dd', {}, s.parties.map(p => h('div', { class: 'mono', title: p }, p, me && p === me.agent_id ? ' (you)' : ''))),
        h('dt', {}, 'deadline'), h('dd', {}, when(s.deadline)),
        h('dt', {}, 'waiting on'), h('dd', {}, s.state ? '—' : ((s.waiting_on || []).map(agentLabel).join(', ') || 'nobody') + ' since ' + when(s.since) + ' (' + ago(s.since) + ')'),
        h('dt', {}, 'chain lock'), h('dd', { class: 'mono' }, s.lock_holder ? 'held by session ' + s.lock_holder : 'free'),
        s.vote ? [h('dt', {}, 'vote'), h('dd', {}, s.vote)] : null,
        s.record_hash ? [h('dt', {}, 'record'), h('dd', { class: 'mono' }, s.record_hash)] : null,
        s.reason ? [h('dt', {}, 'reason'), h('dd', {}, s.reason)] : null),
      h('h3', {}, 'Timeline'),
      h('ol', { class: 'timeline' }, tl.map(x => h('li', {}, h('span', { class: 'muted' }, when(x.at)), ' ', x.text))),
      s.state ? null : abortForm(s),
      s.state === 'committed' ? receiptButton(s.session) : null));
  } catch (e) { showError(box, e); }
}

function receiptButton(session) {
  const err = errorBox('receipt:' + session);
  const btn = h('button', { class: 'secondary act-receipt' }, 'Download receipt (CBOR)');
  btn.addEventListener('click', () => downloadReceipt(session, err));
  return h('div', {}, h('div', { class: 'actions' }, btn), err);
}

function abortForm(s) {
  const err = errorBox('abort:' + s.session);
  const reason = h('input', { placeholder: 'reason (optional)', maxlength: 200 });
  const btn = h('button', { class: 'danger act-abort' }, 'Abort');
  btn.addEventListener('click', async () => {
    unstickError(err);
    try { await api('POST', '/v1/sessions/' + encodeURIComponent(s.session) + '/decide', { action: 'abort', reason: reason.value }); banner('abort sent', true); refresh(); }
    catch (e) { stickError(err, e); }
  });
  return h('div', {}, h('div', { class: 'actions' }, btn, reason), err);
}

// ---- chain ----

async function loadChain() {
  const st = await api('GET', '/v1/chain/status');
  $('#chain-status').replaceChildren(h('dl', { class: 'kv' },
    h('dt', {}, 'agent'), h('dd', { class: 'mono' }, st.agent_id),
    h('dt', {}, 'length'), h('dd', {}, st.length, ' entries'),
    h('dt', {}, 'head'), h('dd', { class: 'mono' }, st.head),
    h('dt', {}, 'lock'), h('dd', {}, st.lock ? h('span', { class: 'warn' }, 'held by session ', h('span', { class: 'mono' }, st.lock.session), ' since ', when(st.lock.since)) : 'free')));
  const q = $('#chain-search').q.value.trim();
  const params = new URLSearchParams({ limit: '10' });
  if (chainBefore) params.set('before', chainBefore);
  if (q) params.set('q', q);
  const page = await api('GET', '/v1/chain/records?' + params);
  const box = $('#records');
  box.replaceChildren();
  if (!page.records.length) box.append(h('p', { class: 'muted' }, q ? 'No record matches "' + q + '" here.' : 'No entries.'));
  for (const r of page.records) box.append(recordCard(r));
  const older = $('#older');
  older.disabled = !page.next_before;
  older.onclick = () => { chainHistory.push(chainBefore); chainBefore = page.next_before; loadChain().catch(e => banner(e.message)); };
  $('#newest').disabled = !chainBefore;
}

function recordCard(r) {
  const d = r.record;
  const err = errorBox('receipt:' + (d ? d.session : r.seq));
  const card = h('div', { class: 'card record', dataset: { seq: r.seq, kind: r.kind, record: r.record_hash || '' } },
    h('h3', {}, '#', r.seq, ' ', r.kind, ' ', r.verified ? h('span', { class: 'ok verified' }, '✓ verified') : h('span', { class: 'bad verified' }, '✗ ', r.verify_error || 'not verified')),
    h('dl', { class: 'kv' },
      h('dt', {}, 'time'), h('dd', {}, r.time),
      h('dt', {}, 'entry hash'), h('dd', { class: 'mono' }, r.hash),
      r.record_hash ? [h('dt', {}, 'record hash'), h('dd', { class: 'mono record-hash' }, r.record_hash)] : null,
      d ? [h('dt', {}, 'session'), h('dd', { class: 'mono' }, d.session),
        h('dt', {}, 'round'), h('dd', {}, d.round),
        h('dt', {}, 'terms'), h('dd', { class: 'mono' }, termsText(d.terms)),
        h('dt', {}, 'signatures'), h('dd', {}, d.parties.map(p => h('div', {}, h('span', { class: 'mono', title: p.agent_id }, agentLabel(p.agent_id)), ' ', p.scheme, ' at head ', p.head_seq, ' ', h('span', { class: 'mono muted', title: p.signature }, p.signature.slice(0, 16) + '…')))),
        d.witness ? [h('dt', {}, 'witness'), h('dd', { class: 'mono' }, d.witness)] : null] : null));
  if (d) {
    const btn = h('button', { class: 'secondary act-receipt' }, 'Download receipt (CBOR)');
    btn.addEventListener('click', () => downloadReceipt(d.session, err));
    card.append(h('div', { class: 'actions' }, btn), err);
  }
  return card;
}

// downloadReceipt saves the commit certificate of a committed session.
async function downloadReceipt(session, err) {
  unstickError(err);
  try {
    const resp = await api('GET', '/v1/sessions/' + encodeURIComponent(session) + '/receipt');
    const blob = await resp.blob();
    const a = h('a', { href: URL.createObjectURL(blob), download: 'receipt-' + session + '.cbor' });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (e) { stickError(err, e); }
}

$('#chain-search').addEventListener('submit', ev => { ev.preventDefault(); chainBefore = 0; chainHistory = []; loadChain().catch(e => banner(e.message)); });
$('#newest').addEventListener('click', () => { chainBefore = 0; chainHistory = []; loadChain().catch(e => banner(e.message)); });
$('#verify-chain').addEventListener('click', async () => {
  const out = $('#verify-result');
  out.replaceChildren(h('p', { class: 'muted' }, 'verifying…'));
  try {
    const v = await api('GET', '/v1/chain/verify');
    out.replaceChildren(v.ok ? h('p', { class: 'ok chain-verify' }, '✓ chain is sound: ', v.length, ' entries, every hash link, seq and signature checked')
      : h('p', { class: 'bad chain-verify' }, '✗ chain is broken at seq ', v.bad_seq, ': ', v.reason));
  } catch (e) { showError(out, e); }
});

// ---- peers ----

async function loadPeers() {
  const p = await api('GET', '/v1/peers');
  $('#identity').replaceChildren(h('dl', { class: 'kv' },
    h('dt', {}, 'agent'), h('dd', { class: 'mono' }, me ? me.agent_id : ''),
    h('dt', {}, 'peer'), h('dd', { class: 'mono' }, me ? me.peer_id : ''),
    h('dt', {}, 'addresses'), h('dd', {}, (me && me.addrs || []).map(a => h('div', { class: 'mono' }, a)))));
  const at = $('#agents-table tbody');
  at.replaceChildren();
  if (!p.agents.length) at.append(h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'No agents known yet.')));
  for (const a of p.agents) {
    const out = h('span', { class: 'rtt' });
    const btn = h('button', { class: 'secondary act-ping' }, 'Ping');
    btn.addEventListener('click', () => ping(a.agent_id, out, btn));
    at.append(h('tr', { dataset: { agent: a.agent_id } }, h('td', { class: 'mono' }, a.agent_id), h('td', { class: 'mono' }, short(a.peer_id)), h('td', {}, (a.addrs || []).map(x => h('div', { class: 'mono' }, x))), h('td', {}, btn, ' ', out)));
  }
  const pt = $('#peers-table tbody');
  pt.replaceChildren();
  if (!p.connected.length) pt.append(h('tr', {}, h('td', { colspan: 3, class: 'muted' }, 'No peer connected.')));
  for (const c of p.connected) pt.append(h('tr', {}, h('td', { class: 'mono' }, c.peer_id), h('td', { class: 'mono' }, c.agent_id || '—'), h('td', {}, (c.addrs || []).map(x => h('div', { class: 'mono' }, x)))));
  fillAgents(p.agents);
}

function fillAgents(agents) {
  $('#agents').replaceChildren(...agents.map(a => h('option', { value: a.agent_id })));
}

async function ping(to, out, btn) {
  out.textContent = 'pinging…'; out.className = 'rtt muted';
  if (btn) btn.disabled = true;
  try { const r = await api('POST', '/v1/ping', { to }); out.textContent = r.rtt_ms.toFixed(2) + ' ms'; out.className = 'rtt ok'; }
  catch (e) { showError(out, e); }
  if (btn) btn.disabled = false;
}
$('#ping-form').addEventListener('submit', ev => { ev.preventDefault(); ping(ev.target.to.value.trim(), $('#ping-result')); });

// ---- navigation and live updates ----

const loaders = { inbox: loadInbox, propose: async () => { await refreshProgress(); fillAgents((await api('GET', '/v1/peers')).agents); }, sessions: loadSessions, chain: loadChain, peers: loadPeers };

let refreshing = null, again = false;
async function refresh() {
  if (refreshing) { again = true; return refreshing; }
  refreshing = (async () => {
    do {
      again = false;
      try { await loaders[current](); if (current !== 'inbox') setBadge((await api('GET', '/v1/proposals')).length); }
      catch (e) { banner(e.message); }
    } while (again);
    refreshing = null;
  })();
  return refreshing;
}

function show() {
  const page = (location.hash || '#inbox').slice(1);
  current = loaders[page] ? page : 'inbox';
  for (const s of document.querySelectorAll('.page')) s.hidden = s.id !== 'page-' + current;
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.page === current);
  banner('');
  refresh();
}
window.addEventListener('hashchange', show);

function connect() {
  const es = new EventSource('/api/v1/events');
  const live = $('#live');
  es.addEventListener('open', () => { live.textContent = 'live'; live.className = 'live'; });
  es.addEventListener('error', () => { live.textContent = 'reconnecting…'; live.className = 'live off'; });
  const onEvent = () => { refresh(); };
  for (const k of ['hello', 'proposal', 'counter', 'phase', 'committed', 'rejected', 'aborted', 'violation', 'message', 'resync']) es.addEventListener(k, onEvent);
}

(async () => {
  try { me = await api('GET', '/v1/identity'); $('#me').textContent = short(me.agent_id); $('#me').title = me.agent_id; }
  catch (e) { banner(e.message); }
  show();
  connect();
})();
