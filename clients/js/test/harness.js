// Loaded into a page of the server under test by tests/api/browser.rs: records what
// courier.js clients see, and resolves waits when what a test waits for has happened.
(async () => {
  const mod = await import('/client.js');
  const waiters = new Set();
  const changed = () => {
    for (const w of [...waiters]) {
      let ok = false;
      try { ok = w.pred(); } catch { ok = false; }
      if (ok) { waiters.delete(w); clearTimeout(w.timer); w.resolve(true); }
    }
  };
  const H = {
    mod,
    clients: {},
    /** Opens client `key`; resolves when it is connected or has given up. */
    async open(key, options) {
      const rec = { states: [], errors: [], messages: {}, recoveries: {}, typing: {}, refreshed: 0 };
      const client = mod.connect(options);
      rec.client = client;
      H.clients[key] = rec;
      client.on('state', (s) => { rec.states.push({ state: s.state, code: s.code ?? null, reason: s.reason ?? null, final: !!s.final }); changed(); });
      client.on('error', (e) => { rec.errors.push({ code: e.code, message: e.message }); changed(); });
      client.on('refreshed', () => { rec.refreshed++; changed(); });
      await H.waitFor(() => client.state === 'connected' || rec.states.some((s) => s.final), 15000, `${key} connects`);
      return { state: client.state, session: client.session, states: rec.states, errors: rec.errors };
    },
    async join(key, name) {
      const rec = H.clients[key];
      const room = rec.client.room(name);
      rec.messages[name] = [];
      rec.recoveries[name] = [];
      rec.typing[name] = [];
      room.on('message', (e) => { rec.messages[name].push({ seq: e.seq, data: e.data, from: e.from }); changed(); });
      room.on('recovery', (r) => { rec.recoveries[name].push(r); changed(); });
      room.on('typing', (t) => { rec.typing[name].push(t.from); changed(); });
      room.on('joined', () => changed());
      return room.join();
    },
    /** Publishes and reports how the promise settled. */
    async publish(key, name, data, options) {
      try {
        return { seq: await H.clients[key].client.room(name).publish(data, options) };
      } catch (e) {
        return { error: e.code, id: e.id, message: e.message };
      }
    },
    /** Starts a publish and keeps its promise; `settled(tag)` says how it ended. */
    publishLater(tag, key, name, data, options) {
      H.later[tag] = null;
      H.clients[key].client.room(name).publish(data, options).then(
        (seq) => { H.later[tag] = { seq }; changed(); },
        (e) => { H.later[tag] = { error: e.code, id: e.id }; changed(); });
      return true;
    },
    later: {},
    seqs(key, name) { return H.clients[key].messages[name].map((m) => m.seq); },
    texts(key, name) { return H.clients[key].messages[name].map((m) => m.data.text); },
    /** Resolves when `pred()` holds, checked whenever a client records something. */
    waitFor(pred, ms = 10000, what = 'condition') {
      let ok = false;
      try { ok = pred(); } catch { ok = false; }
      if (ok) return Promise.resolve(true);
      return new Promise((resolve, reject) => {
        const w = { pred, resolve };
        w.timer = setTimeout(() => { waiters.delete(w); reject(new Error(`timed out waiting for: ${what}`)); }, ms);
        waiters.add(w);
      });
    },
    changed,
  };
  window.H = H;
  return true;
})()
