// courier.js: a small, dependency-free client for courier's realtime protocol.
//
//   import { connect } from '/client.js';
//   const client = connect({ url: 'https://chat.example.com', getToken: fetchToken });
//   const lobby = client.room('lobby');
//   lobby.on('message', (e) => console.log(e.seq, e.from, e.data));
//   await lobby.join();
//   const seq = await lobby.publish({ text: 'hi' });
//
// WebSocket (`/ws/json`): reconnects with exponential backoff and jitter, rejoins every
// room with the last seq it delivered (each event reaches the application once, in order),
// resends unacknowledged publishes with their ids (the server acknowledges a resend with
// the first seq instead of publishing it again), refreshes an expiring token with
// getToken(), and reports lost history as a `recovery` event.
// SSE (`subscribe`): typed events from `/rooms/{room}/events` or `/sse/updates`, resumed
// after the last event seen, with a new token when the old one expires.
//
// Licence: MIT OR Apache-2.0, as courier.

/** Defaults; every one can be changed in the options of connect(). */
export const DEFAULTS = Object.freeze({
  minReconnectDelayMs: 500,   // first reconnect waits about this long
  maxReconnectDelayMs: 15000, // backoff doubles up to this
  ackTimeoutMs: 10000,        // a publish not acknowledged by then is rejected
  requestTimeoutMs: 10000,    // join() and presence() give up after this
  pingIntervalMs: 20000,      // a ping when nothing was received for this long
  pongTimeoutMs: 10000,       // ... and the connection is dropped without an answer
  typingIntervalMs: 1000,     // typing() sends at most once per this per room
  history: 50,                // events shown on a room's first join (0: none)
});

/** The error every rejected promise and `error` event carries. */
export class CourierError extends Error {
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = 'CourierError';
    this.code = code;
    Object.assign(this, extra);
  }
}

/** A tiny event emitter: on() returns a function that removes the listener. */
class Emitter {
  #listeners = new Map();
  on(type, fn) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }
  off(type, fn) { this.#listeners.get(type)?.delete(fn); }
  emit(type, value) {
    for (const fn of [...(this.#listeners.get(type) ?? [])]) {
      try { fn(value); } catch (err) { setTimeout(() => { throw err; }); }
    }
  }
}

// Codes after which reconnecting cannot help (the server API disconnected the client).
const NO_RECONNECT = new Set([4003]);
// Publish refusals that mean "not numbered, send it again".
const RETRYABLE = new Set(['unavailable', 'overloaded']);
// Join refusals that come back as `error` frames naming the room.
const JOIN_ERRORS = new Set(['unauthorized', 'forbidden', 'too_many_rooms', 'rate_limited', 'overloaded']);

function wsUrl(base, path) {
  const origin = base ?? (typeof location !== 'undefined' ? location.href : undefined);
  if (!origin) throw new CourierError('invalid_options', 'url is required outside a browser');
  const url = new URL(path, origin);
  if (url.protocol === 'http:') url.protocol = 'ws:';
  if (url.protocol === 'https:') url.protocol = 'wss:';
  return url;
}

function randomId() {
  const bytes = new Uint8Array(6);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Opens a client. Options: url (the server, http(s) or ws(s); default the page's origin),
 * token or getToken (async, called on every connect and when the token expires), name
 * (a guest's name, without a token), and any of DEFAULTS.
 */
export function connect(options = {}) {
  return new Client(options);
}

export class Client extends Emitter {
  #opts;
  #ws = null;
  #timer = null;          // reconnect timer
  #pingTimer = null;
  #attempt = 0;
  #closed = false;
  #helloSeen = false;
  #lastFrameAt = 0;
  #pingSentAt = 0;
  #rooms = new Map();
  #pending = new Map();   // publish id -> { room, frame, resolve, reject, timer, sent }
  #prefix = randomId();
  #next = 1;

  constructor(options) {
    super();
    this.#opts = { ...DEFAULTS, ...options };
    /** `connecting`, `connected` or `disconnected`. */
    this.state = 'disconnected';
    /** The server's hello: { client_id, user, name, expires_at }. */
    this.session = null;
    queueMicrotask(() => this.#open());
  }

  /** The room `name`, created on first use (not joined until join()). */
  room(name) {
    let room = this.#rooms.get(name);
    if (!room) {
      room = new Room(this, name, this.#opts);
      this.#rooms.set(name, room);
    }
    return room;
  }

  /** Closes the connection for good; pending publishes are rejected. */
  close() {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#stopPing();
    const ws = this.#ws;
    this.#ws = null;
    if (ws) ws.close(1000, 'client closed');
    for (const [id, p] of this.#pending) this.#settle(id, p, new CourierError('closed', 'the client was closed', { id }));
    this.#setState('disconnected', { code: 1000, reason: 'client closed' });
  }

  /** Connects again now (after an error state, or to skip a backoff wait). */
  reconnect() {
    this.#closed = false;
    if (this.#ws) this.#drop(4000, 'reconnecting');
    clearTimeout(this.#timer);
    this.#attempt = 0;
    this.#open();
  }

  // ---- internals used by Room ----

  /** Sends a frame when connected; false otherwise. */
  _send(frame) {
    if (!this.#ws || !this.#helloSeen || this.#ws.readyState !== 1) return false;
    this.#ws.send(JSON.stringify(frame));
    return true;
  }

  get _connected() { return this.state === 'connected'; }

  _publish(room, data, id) {
    id = id ?? `${this.#prefix}-${this.#next++}`;
    const existing = this.#pending.get(id);
    if (existing) return existing.promise;
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    const frame = { type: 'publish', room: room.name, data, id };
    const p = { room, frame, resolve, reject, promise, sent: false };
    p.timer = setTimeout(() => this.#settle(id, p, p.lastError ?? new CourierError('timeout',
      `no acknowledgement within ${this.#opts.ackTimeoutMs} ms; publish again with the same id to retry safely`, { id })),
    this.#opts.ackTimeoutMs);
    this.#pending.set(id, p);
    p.sent = this._send(frame);   // otherwise sent once connected
    return promise;
  }

  #settle(id, p, error, seq) {
    if (this.#pending.get(id) !== p) return;
    this.#pending.delete(id);
    clearTimeout(p.timer);
    if (error) p.reject(error); else p.resolve(seq);
  }

  #setState(state, detail = {}) {
    this.state = state;
    this.emit('state', { state, ...detail });
    this.emit(state, detail);
  }

  async #open() {
    if (this.#closed || this.#ws || this.#opening) return;
    this.#opening = true;
    try { await this.#openSocket(); } finally { this.#opening = false; }
  }

  #opening = false;

  async #openSocket() {
    this.#helloSeen = false;
    this.#setState('connecting', { attempt: this.#attempt });
    let url;
    try {
      url = wsUrl(this.#opts.url, '/ws/json');
      const token = this.#opts.getToken ? await this.#opts.getToken() : this.#opts.token;
      if (this.#closed || this.#ws) return;
      if (token) url.searchParams.set('token', token);
      else if (this.#opts.name) url.searchParams.set('name', this.#opts.name);
    } catch (err) {
      this.emit('error', err instanceof CourierError ? err : new CourierError('token', `getToken failed: ${err?.message ?? err}`));
      this.#scheduleReconnect({ code: 0, reason: 'getToken failed' });
      return;
    }
    const ws = new WebSocket(url);
    this.#ws = ws;
    ws.onmessage = (e) => { if (this.#ws === ws) this.#onFrame(e.data); };
    ws.onclose = (e) => { if (this.#ws === ws) this.#onClose(e.code, e.reason); };
  }

  #onClose(code, reason) {
    this.#ws = null;
    this.#stopPing();
    const hadHello = this.#helloSeen;
    this.#helloSeen = false;
    for (const room of this.#rooms.values()) room._offline();
    for (const p of this.#pending.values()) p.sent = false;
    const detail = { code, reason };
    if (!hadHello && code === 1008 && !this.#opts.getToken) {
      // The server refused the token at the door; the same token will not do better.
      this.#closed = true;
      const error = new CourierError('unauthorized', reason || 'the server refused the connection', { closeCode: code });
      this.emit('error', error);
      for (const [id, p] of this.#pending) this.#settle(id, p, error);
      this.#setState('disconnected', { ...detail, final: true });
      return;
    }
    if (NO_RECONNECT.has(code)) {
      this.#closed = true;
      this.#setState('disconnected', { ...detail, final: true });
      return;
    }
    this.#scheduleReconnect(detail);
  }

  #scheduleReconnect(detail) {
    if (this.#closed) return;
    const { minReconnectDelayMs: min, maxReconnectDelayMs: max } = this.#opts;
    const ceiling = Math.min(max, min * 2 ** Math.min(this.#attempt, 16));
    const delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);   // jitter
    this.#attempt++;
    this.#setState('disconnected', { ...detail, retryInMs: delay, attempt: this.#attempt });
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#open(), delay);
  }

  /** Drops the current socket without waiting for its closing handshake. */
  #drop(code, reason) {
    const ws = this.#ws;
    if (!ws) return;
    try { ws.close(code, reason); } catch { /* already closing */ }
    this.#onClose(code, reason);
  }

  #startPing() {
    this.#stopPing();
    this.#lastFrameAt = Date.now();
    const every = Math.min(this.#opts.pingIntervalMs, this.#opts.pongTimeoutMs);
    this.#pingTimer = setInterval(() => {
      const now = Date.now();
      if (this.#pingSentAt && now - this.#pingSentAt >= this.#opts.pongTimeoutMs) {
        this.#drop(4000, 'no answer to ping');
      } else if (!this.#pingSentAt && now - this.#lastFrameAt >= this.#opts.pingIntervalMs) {
        if (this._send({ type: 'ping' })) this.#pingSentAt = now;
      }
    }, every);
  }

  #stopPing() {
    clearInterval(this.#pingTimer);
    this.#pingTimer = null;
    this.#pingSentAt = 0;
  }

  async #refreshToken() {
    if (!this.#opts.getToken) {
      this.emit('error', new CourierError('token_expired', 'the token expired and there is no getToken() to renew it'));
      return;
    }
    try {
      const token = await this.#opts.getToken();
      if (token && !this._send({ type: 'refresh', token })) return;
    } catch (err) {
      this.emit('error', new CourierError('token', `getToken failed: ${err?.message ?? err}`));
    }
  }

  #onFrame(raw) {
    this.#lastFrameAt = Date.now();
    this.#pingSentAt = 0;
    let f;
    try { f = JSON.parse(raw); } catch { return; }
    if (!f || typeof f.type !== 'string') return;
    const room = typeof f.room === 'string' ? this.#rooms.get(f.room) : undefined;
    switch (f.type) {
      case 'hello':
        this.#helloSeen = true;
        this.#attempt = 0;
        this.session = { client_id: f.client_id, user: f.user, name: f.name, expires_at: f.expires_at };
        this.#setState('connected', { session: this.session });
        this.#startPing();
        for (const r of this.#rooms.values()) r._rejoin();
        for (const p of this.#pending.values()) if (!p.sent) p.sent = this._send(p.frame);
        break;
      case 'ack': {
        const p = this.#pending.get(f.id);
        if (p) this.#settle(f.id, p, null, f.seq);
        break;
      }
      case 'error':
        if (f.code === 'token_expired') { this.#refreshToken(); break; }
        if (typeof f.id === 'string' && this.#pending.has(f.id)) {
          const p = this.#pending.get(f.id);
          const error = new CourierError(f.code, f.message, { id: f.id });
          if (RETRYABLE.has(f.code)) {
            // The server did not number it (its store is down, or the first copy is still
            // being stored): send it again, with the same id, until the ack timeout.
            p.lastError = error;
            p.retries = (p.retries ?? 0) + 1;
            const delay = Math.min(this.#opts.maxReconnectDelayMs, this.#opts.minReconnectDelayMs / 2 * 2 ** Math.min(p.retries, 10));
            setTimeout(() => { if (this.#pending.get(f.id) === p) p.sent = this._send(p.frame); }, delay);
            break;
          }
          this.#settle(f.id, p, error);
          break;
        }
        if (room && room._onError(f)) break;
        this.emit('error', new CourierError(f.code, f.message, { room: f.room }));
        break;
      case 'refreshed':
        if (this.session) this.session.expires_at = f.expires_at;
        this.emit('refreshed', f);
        break;
      case 'pong': break;
      default:
        if (room) room._onFrame(f);
        else this.emit('frame', f);
    }
  }
}

export class Room extends Emitter {
  #client;
  #opts;
  #wanted = false;
  #joinedOnce = false;
  #waiters = [];           // join() promises waiting for `joined`
  #presenceWaiters = [];
  #lastTyping = 0;
  #trimBelow = 0;          // first join: events at or below this are not shown

  constructor(client, name, opts) {
    super();
    this.#client = client;
    this.#opts = opts;
    this.name = name;
    /** Whether the server has this client in the room right now. */
    this.joined = false;
    /** The last seq delivered to the application, and the numbering it belongs to. */
    this.seq = null;
    this.epoch = null;
  }

  /**
   * Joins (and keeps the room joined across reconnects). Resolves with the `joined` frame
   * once the server confirms; rejects on a refusal or timeout.
   */
  join() {
    this.#wanted = true;
    const promise = new Promise((resolve, reject) => {
      const w = { resolve, reject };
      w.timer = setTimeout(() => this.#finish(w, new CourierError('timeout', `no answer to join within ${this.#opts.requestTimeoutMs} ms`, { room: this.name })),
        this.#opts.requestTimeoutMs);
      this.#waiters.push(w);
    });
    if (this.#client._connected) this.#sendJoin();
    return promise;
  }

  /** Leaves the room; nothing more is delivered for it. */
  leave() {
    this.#wanted = false;
    if (this.joined) this.#client._send({ type: 'leave', room: this.name });
    this.joined = false;
    for (const w of this.#waiters.splice(0)) this.#finish(w, new CourierError('left', 'left the room'));
  }

  /**
   * Publishes `data` (any JSON value). Resolves with its seq when the server acknowledges
   * it; rejects with a CourierError (`code`: `timeout`, `unavailable`, `forbidden`, ...,
   * and `id`). While disconnected, and when the server could not number it (`unavailable`,
   * `overloaded`), it is sent again with the same id until `ackTimeoutMs`. Calling publish
   * again with the same `{id}` is safe: the server answers a retry with the first seq and
   * does not publish twice.
   */
  publish(data, { id } = {}) {
    return this.#client._publish(this, data, id);
  }

  /** Resolves with the room's members: [{ id, name, user }]. */
  presence() {
    return new Promise((resolve, reject) => {
      const w = { resolve, reject };
      w.timer = setTimeout(() => {
        this.#presenceWaiters = this.#presenceWaiters.filter((x) => x !== w);
        reject(new CourierError('timeout', 'no presence answer', { room: this.name }));
      }, this.#opts.requestTimeoutMs);
      this.#presenceWaiters.push(w);
      if (!this.#client._send({ type: 'presence', room: this.name })) {
        clearTimeout(w.timer);
        this.#presenceWaiters = this.#presenceWaiters.filter((x) => x !== w);
        reject(new CourierError('disconnected', 'not connected', { room: this.name }));
      }
    });
  }

  /** Tells the others this client is typing (at most once per typingIntervalMs). */
  typing() {
    const now = Date.now();
    if (!this.joined || now - this.#lastTyping < this.#opts.typingIntervalMs) return false;
    if (this.#client._send({ type: 'typing', room: this.name })) this.#lastTyping = now;
    return true;
  }

  #finish(w, error, value) {
    clearTimeout(w.timer);
    this.#waiters = this.#waiters.filter((x) => x !== w);
    if (error) w.reject(error); else w.resolve(value);
  }

  #sendJoin() {
    const frame = { type: 'join', room: this.name };
    if (this.seq !== null) {
      frame.since = this.seq;
      if (this.epoch) frame.epoch = this.epoch;
    } else if (this.#opts.history > 0 && !this.#noHistory) {
      frame.since = 0;   // first join: the kept history, trimmed to `history` on arrival
    }
    this.#client._send(frame);
  }

  #noHistory = false;

  _rejoin() { if (this.#wanted) this.#sendJoin(); }

  _offline() {
    const was = this.joined;
    this.joined = false;
    if (was) this.emit('offline', {});
  }

  /** An `error` frame naming this room; true when it was handled here. */
  _onError(f) {
    if (f.code === 'history_truncated') return true;   // reported by `recovery`
    if (this.seq === null && !this.#noHistory && f.code === 'forbidden' && this.#wanted && !this.joined) {
      // The namespace may refuse history to this client: join without it.
      this.#noHistory = true;
      this.#sendJoin();
      return true;
    }
    if (JOIN_ERRORS.has(f.code) && !this.joined && this.#waiters.length) {
      this.#wanted = false;
      const error = new CourierError(f.code, f.message, { room: this.name });
      for (const w of [...this.#waiters]) this.#finish(w, error);
      this.emit('error', error);
      return true;
    }
    this.emit('error', new CourierError(f.code, f.message, { room: this.name }));
    return true;
  }

  _onFrame(f) {
    switch (f.type) {
      case 'joined': this.#onJoined(f); break;
      case 'event': this.#onEvent(f); break;
      case 'resync':
        this.epoch = f.epoch ?? null;
        this.seq = f.seq;
        this.emit('recovery', { recovered: false, reason: 'resync', seq: f.seq, epoch: f.epoch });
        break;
      case 'left':
        this.joined = false;
        if (this.#wanted) { this.#wanted = false; this.emit('left', { byServer: true }); }
        break;
      case 'presence':
        for (const w of this.#presenceWaiters.splice(0)) { clearTimeout(w.timer); w.resolve(f.members); }
        this.emit('presence', f.members);
        break;
      case 'member_joined': this.emit('member_joined', f.member); break;
      case 'member_left': this.emit('member_left', f.member); break;
      case 'typing': this.emit('typing', { from: f.from }); break;
      default: break;
    }
  }

  #onJoined(f) {
    if (!this.#wanted) { this.#client._send({ type: 'leave', room: this.name }); return; }
    const first = this.seq === null;
    this.joined = true;
    if (first) {
      this.#trimBelow = this.#opts.history > 0 && !this.#noHistory ? Math.max(0, f.seq - this.#opts.history) : f.seq;
      this.seq = this.#trimBelow;
      this.epoch = f.epoch ?? null;
    } else if (f.recovered === false) {
      // Whatever the server still has after `since` follows; when the numbering changed
      // (or the client is ahead of the server), nothing does and live events start after seq.
      const sameNumbering = !this.epoch || !f.epoch || this.epoch === f.epoch;
      if (!sameNumbering || this.seq > f.seq) this.seq = f.seq;
      this.epoch = f.epoch ?? null;
      const reason = sameNumbering ? 'truncated' : 'epoch';
      this.emit('recovery', { recovered: false, reason, seq: f.seq, epoch: f.epoch });
    } else if (f.epoch) {
      this.epoch = f.epoch;
    }
    const info = { seq: f.seq, epoch: f.epoch ?? null, recovered: first ? null : (f.recovered ?? true), first };
    this.#joinedOnce = true;
    this.emit('joined', info);
    for (const w of [...this.#waiters]) this.#finish(w, null, info);
  }

  #onEvent(f) {
    if (typeof f.seq !== 'number' || (this.seq !== null && f.seq <= this.seq)) return;   // seen
    this.seq = f.seq;
    this.emit('message', { seq: f.seq, from: f.from, user: f.user ?? null, data: f.data, ts: f.ts, room: this.name });
  }
}

/**
 * Follows an SSE stream: a room (`/rooms/{room}/events`) or `/sse/updates`. Options: url
 * (the server; default the page's origin), token or getToken (sent as `?token=`, since
 * EventSource cannot send headers). Events: `joined`, `message` (parsed), `update`,
 * `recovery`, `error`, `state`. A stream that ends because its token expired is reopened
 * with a new token after the last event it delivered, so nothing is missed or repeated.
 */
export function subscribe(path, options = {}) {
  return new Subscription(path, options);
}

export class Subscription extends Emitter {
  #path;
  #opts;
  #es = null;
  #closed = false;
  #since = null;   // last seq delivered, with its epoch
  #epoch = null;

  constructor(path, options) {
    super();
    this.#path = path;
    this.#opts = { ...DEFAULTS, ...options };
    this.state = 'connecting';
    queueMicrotask(() => this.#open());
  }

  close() {
    this.#closed = true;
    this.#es?.close();
    this.#es = null;
    this.state = 'disconnected';
    this.emit('state', { state: 'disconnected' });
  }

  async #open() {
    if (this.#closed) return;
    const base = this.#opts.url ?? (typeof location !== 'undefined' ? location.href : undefined);
    const url = new URL(this.#path, base);
    try {
      const token = this.#opts.getToken ? await this.#opts.getToken() : this.#opts.token;
      if (token) url.searchParams.set('token', token);
    } catch (err) {
      this.emit('error', new CourierError('token', `getToken failed: ${err?.message ?? err}`));
    }
    if (this.#since !== null) {
      url.searchParams.set('since', String(this.#since));
      if (this.#epoch) url.searchParams.set('epoch', this.#epoch);
    }
    if (this.#closed) return;
    const es = new EventSource(url);
    this.#es = es;
    const json = (e) => { try { return JSON.parse(e.data); } catch { return e.data; } };
    es.onopen = () => { this.state = 'connected'; this.emit('state', { state: 'connected' }); };
    es.addEventListener('joined', (e) => {
      const f = json(e);
      if (f.recovered === false) this.emit('recovery', { recovered: false, seq: f.seq, epoch: f.epoch });
      if (this.#since === null || f.recovered === false) { this.#since = f.seq; this.#epoch = f.epoch ?? null; }
      this.emit('joined', f);
    });
    es.addEventListener('message', (e) => {
      const f = json(e);
      if (f && typeof f.seq === 'number') {
        if (this.#since !== null && f.seq <= this.#since) return;
        this.#since = f.seq;
        const colon = e.lastEventId.lastIndexOf(':');
        if (colon > 0) this.#epoch = e.lastEventId.slice(0, colon);
      }
      this.emit('message', f);
    });
    for (const name of ['update', 'heartbeat']) es.addEventListener(name, (e) => this.emit(name, json(e)));
    es.addEventListener('error', (e) => {
      if (e.data) {   // the server's own `error` event, before the stream ends
        const f = json(e);
        this.emit('error', new CourierError(f.code ?? 'error', f.message));
        if (f.code === 'token_expired' || es.readyState === EventSource.CLOSED) this.#reopen();
        return;
      }
      // A network error: EventSource retries by itself unless it gave up.
      this.state = es.readyState === EventSource.CLOSED ? 'disconnected' : 'connecting';
      this.emit('state', { state: this.state });
      if (es.readyState === EventSource.CLOSED) this.#reopen(this.#opts.minReconnectDelayMs);
    });
  }

  #reopen(delay = 0) {
    this.#es?.close();
    this.#es = null;
    if (!this.#closed) setTimeout(() => this.#open(), delay);
  }
}
