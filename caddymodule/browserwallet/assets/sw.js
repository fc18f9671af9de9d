// The ecoupons browser wallet's service worker. It passes every request
// of the site through; when the site answers 402 with an e-coupon
// challenge, the wallet (the Go wallet compiled to WebAssembly,
// wallet.wasm) pays it and the paid answer is what the page gets. All of
// the protocol is in wallet.wasm: this file only routes.
importScripts('wasm_exec.js');

const base = new URL('./', self.location).pathname; // /.well-known/ecoupons/
let loading = null;

// wallet loads wallet.wasm once per worker and resolves with its API.
function wallet() {
  if (!loading) {
    loading = (async () => {
      const go = new Go();
      const ready = new Promise((resolve) => { self.ecouponsReady = resolve; });
      const { instance } = await WebAssembly.instantiateStreaming(fetch(base + 'wallet.wasm'), go.importObject);
      go.run(instance);
      return ready;
    })();
    loading.catch(() => { loading = null; });
  }
  return loading;
}

self.addEventListener('install', (e) => e.waitUntil(self.skipWaiting()));
self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));

self.addEventListener('fetch', (e) => {
  const url = new URL(e.request.url);
  if (url.origin !== self.location.origin || url.pathname.startsWith(base)) return;
  e.respondWith(handle(e.request));
});

async function handle(req) {
  const again = req.clone(); // the body, for the paid request
  const resp = await fetch(req);
  if (resp.status !== 402 || !(resp.headers.get('WWW-Authenticate') || '').match(/ECoupon|Payment/i)) return resp;
  let w;
  try {
    w = await wallet();
  } catch (err) {
    return resp;
  }
  const copy = resp.clone();
  try {
    return await w.pay(again, resp);
  } catch (err) {
    return explain(req, copy, err);
  }
}

// explain answers with the site's 402 and why the wallet did not pay: in
// the HTML 402 page (in place of its <div id="ecoupons-wallet-note"></div>,
// else at the start of its body) for a navigation, in an
// ECoupons-Wallet-Error header always.
async function explain(req, resp, err) {
  const code = err && err.code ? err.code : 'failed';
  const msg = messages[code] ? messages[code] + ' (' + err.message + ')' : String(err && err.message || err);
  const headers = new Headers(resp.headers);
  headers.set('ECoupons-Wallet-Error', code);
  const type = resp.headers.get('Content-Type') || '';
  if (req.mode !== 'navigate' || !type.startsWith('text/html')) {
    return new Response(resp.body, { status: resp.status, statusText: resp.statusText, headers });
  }
  const page = await resp.text();
  const note = '<p id="ecoupons-wallet-message" role="alert" class="alert">' + escapeHTML(msg) +
    ' <a href="' + base + 'wallet">Open the wallet</a></p>';
  const mark = '<div id="ecoupons-wallet-note"></div>';
  const body = page.includes(mark) ? page.replace(mark, note) : page.replace(/<body[^>]*>/i, (b) => b + note);
  headers.delete('Content-Length');
  return new Response(body, { status: resp.status, statusText: resp.statusText, headers });
}

const messages = {
  paused: 'The browser wallet is paused: it paid nothing.',
  limit: 'Your spending limit stops this payment: nothing was paid.',
  no_grant: 'The browser wallet holds no coupons for this site.',
  busy: 'The browser wallet is busy in another tab; try again.',
  failed: 'The browser wallet could not pay.',
};

function escapeHTML(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

// Pages of the site (the 402 page, the wallet page) ask the wallet through
// messages: {op, args} on a MessagePort, answered {ok} or {error, code}.
const ops = ['pairingCode', 'importGrant', 'status', 'setPaused', 'forget', 'setLimit', 'removeLimit'];
self.addEventListener('message', (e) => {
  const port = e.ports[0];
  const { op, args } = e.data || {};
  if (!port) return;
  if (!ops.includes(op)) {
    port.postMessage({ error: 'unknown operation ' + op, code: 'bad_request' });
    return;
  }
  e.waitUntil((async () => {
    try {
      const w = await wallet();
      port.postMessage({ ok: await w[op](...(args || [])) });
    } catch (err) {
      port.postMessage({ error: String(err && err.message || err), code: err && err.code || 'failed' });
    }
  })());
});
