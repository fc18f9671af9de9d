// The pages' side of the ecoupons browser wallet (the 402 page, the
// wallet page): globalThis.ecoupons asks the service worker, which runs
// the wallet (wallet.wasm). ecoupons.fetch is the page's fetch: once the
// wallet is enabled, the service worker pays the site's 402s.
(() => {
  const base = '/.well-known/ecoupons/';

  async function enable() {
    if (!('serviceWorker' in navigator)) {
      throw new Error('this browser cannot run the wallet here (no service workers: the site must be on https)');
    }
    await navigator.serviceWorker.register(base + 'sw.js', { scope: '/' });
    return navigator.serviceWorker.ready;
  }

  async function enabled() {
    if (!('serviceWorker' in navigator)) return false;
    const reg = await navigator.serviceWorker.getRegistration('/');
    return !!(reg && (reg.active || reg.installing || reg.waiting));
  }

  async function call(op, ...args) {
    if (!(await enabled())) throw Object.assign(new Error('the browser wallet is not enabled'), { code: 'disabled' });
    const reg = await navigator.serviceWorker.ready;
    return new Promise((resolve, reject) => {
      const ch = new MessageChannel();
      ch.port1.onmessage = (e) => (e.data.error !== undefined
        ? reject(Object.assign(new Error(e.data.error), { code: e.data.code }))
        : resolve(e.data.ok));
      reg.active.postMessage({ op, args }, [ch.port2]);
    });
  }

  const api = {
    enable, enabled,
    fetch: (input, init) => fetch(input, init),
    pairingCode: (name) => call('pairingCode', name || 'browser ' + location.host),
    importGrant: (text) => call('importGrant', text),
    status: () => call('status'),
    setPaused: (paused) => call('setPaused', !!paused),
    forget: () => call('forget'),
    setLimit: (limit) => call('setLimit', limit),
    removeLimit: (limit) => call('removeLimit', limit),
  };
  globalThis.ecoupons = api;

  const $ = (id) => document.getElementById(id);
  const say = (text, bad) => {
    const s = $('bw-status');
    if (!s) return;
    s.textContent = text;
    s.className = bad ? 'bad' : '';
  };

  // The pairing panel: the code naming this browser's key, and the grant
  // the reader's wallet makes for it.
  async function showPairing() {
    const panel = $('bw-pair');
    if (!panel) return;
    panel.hidden = false;
    if ($('bw-enable')) $('bw-enable').hidden = true;
    const p = await api.pairingCode();
    $('bw-code').value = p.code;
    $('bw-fp').textContent = p.fingerprint;
    const qr = $('bw-qr');
    if (qr) {
      // Whole pixels per module (crisp for a camera), within a phone's width.
      const px = Math.max(2, Math.min(4, Math.floor(300 / p.qrModules)));
      qr.width = qr.height = px * p.qrModules;
      qr.src = 'data:image/svg+xml;base64,' + btoa(p.qr);
      qr.hidden = false;
    }
    const cmd = $('bw-cmd');
    if (cmd) cmd.textContent = "ecoupons wallet delegate --to '" + p.code + "' --cap 1.00 --lanes 0-3 -o browser.grant";
  }

  async function importGrant(text) {
    say('Checking the grant…');
    try {
      const g = await api.importGrant(text);
      say('Imported ' + g.value + ' ' + g.currency + ' for ' + g.vendor + '.');
      if (document.body.dataset.page === '402') {
        say('Imported ' + g.value + ' ' + g.currency + ' for ' + g.vendor + ': loading the page, paid…');
        location.reload();
      } else if (globalThis.ecouponsRefresh) {
        globalThis.ecouponsRefresh();
      }
    } catch (err) {
      say('The grant was not imported: ' + err.message, true);
    }
  }

  async function wire() {
    const en = $('bw-enable');
    if (en) {
      en.addEventListener('click', async () => {
        en.disabled = true;
        say('Enabling the browser wallet…');
        try {
          await enable();
          await showPairing();
          say('Enabled. Give the pairing code to your wallet, then import the grant it makes.');
          importFromLink();
        } catch (err) {
          say('Could not enable the wallet: ' + err.message, true);
          en.disabled = false;
        }
      });
    }
    const imp = $('bw-import');
    if (imp) imp.addEventListener('click', () => importGrant($('bw-grant').value));
    const file = $('bw-file');
    if (file) {
      file.addEventListener('change', async () => {
        if (file.files.length) importGrant(await file.files[0].text());
      });
    }
    const copy = $('bw-copy');
    if (copy) {
      copy.addEventListener('click', async () => {
        $('bw-code').select();
        try { await navigator.clipboard.writeText($('bw-code').value); say('Pairing code copied.'); } catch (e) { say('Select the code and copy it.'); }
      });
    }
    if (await enabled()) {
      try {
        await showPairing();
      } catch (err) {
        say('The wallet did not answer: ' + err.message, true);
      }
      importFromLink();
    }
  }

  // A link carrying a grant: …/wallet#grant=…
  function importFromLink() {
    if (!location.hash.startsWith('#grant=')) return;
    const g = decodeURIComponent(location.hash.slice(7));
    history.replaceState(null, '', location.pathname);
    importGrant(g);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', wire);
  else wire();
})();
