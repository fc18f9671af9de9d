// The wallet page: balance, grants and lanes, payments and receipts;
// pause, forget, spending limits. Everything goes through ecoupons
// (client.js) to the wallet in the service worker.
(() => {
  const $ = (id) => document.getElementById(id);
  const say = (text, bad) => {
    const s = $('bw-status');
    s.textContent = text;
    s.className = bad ? 'bad' : '';
  };
  const cell = (tr, text, cls) => {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  };
  const fill = (id, rows, render) => {
    const body = $(id).querySelector('tbody');
    body.replaceChildren();
    for (const r of rows) {
      const tr = document.createElement('tr');
      render(tr, r);
      body.appendChild(tr);
    }
    // Narrow screens show each row as a card: every cell carries its
    // column's name (wallet.css shows it before the value).
    const heads = [...$(id).querySelectorAll('thead th')].map((th) => (th.querySelector('.sr') ? '' : th.textContent));
    for (const tr of body.rows) {
      [...tr.cells].forEach((td, i) => { if (heads[i]) td.dataset.label = heads[i]; });
    }
    if (!rows.length) {
      const tr = document.createElement('tr');
      cell(tr, 'none').colSpan = $(id).querySelectorAll('thead th').length;
      body.appendChild(tr);
    }
  };
  const when = (t) => new Date(t).toLocaleString();
  let paused = false;
  let refreshed = false;

  async function refresh() {
    if (!(await ecoupons.enabled())) return;
    let s;
    try {
      s = await ecoupons.status();
    } catch (err) {
      say('The wallet did not answer: ' + err.message, true);
      return;
    }
    paused = s.paused;
    for (const id of ['limits-section', 'grants-section', 'payments-section', 'pause', 'forget']) $(id).hidden = false;
    $('bw-enable').hidden = true;
    $('state').textContent = s.paused ? 'Paused: this browser pays nothing.' : 'On: this browser pays this site\'s paywalls from its grants.';
    $('pause').textContent = s.paused ? 'Resume payments' : 'Pause payments';
    // Once coupons are in, the pairing panel folds away (still there).
    if ((s.grants || []).length && !refreshed) $('bw-pair').open = false;
    refreshed = true;
    const bal = Object.entries(s.balance || {}).map(([c, v]) => v + ' ' + c);
    $('balance').textContent = bal.length ? bal.join(', ') : 'nothing yet (import a grant)';
    fill('grants', s.grants || [], (tr, g) => {
      cell(tr, g.vendor);
      cell(tr, g.value + ' ' + g.currency + ' (' + g.coupons + ' coupons)');
      cell(tr, g.used + ' of ' + g.lanes);
      cell(tr, g.state);
      cell(tr, when(g.expires));
    });
    const probs = $('problems');
    probs.replaceChildren();
    for (const p of s.problems || []) {
      const li = document.createElement('li');
      li.textContent = 'Not spendable: ' + p;
      probs.appendChild(li);
    }
    const hosts = new Set(['*', location.hostname]);
    const sel = $('limit-host');
    if (sel.options.length === 1) {
      const o = document.createElement('option');
      o.value = location.hostname;
      o.textContent = 'this site only (' + location.hostname + ')';
      sel.appendChild(o);
    }
    fill('limits', s.limits || [], (tr, l) => {
      cell(tr, l.host === '*' ? 'all sites' : l.host);
      cell(tr, l.per);
      cell(tr, l.spent + ' ' + l.currency);
      cell(tr, l.max + ' ' + l.currency);
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'secondary';
      b.textContent = 'Remove';
      b.setAttribute('aria-label', 'Remove the limit of ' + l.max + ' ' + l.currency + ' per ' + l.per + (l.host === '*' ? '' : ' at ' + l.host));
      b.addEventListener('click', async () => {
        try {
          await ecoupons.removeLimit({ per: l.per, host: l.host, currency: l.currency });
          say('Limit removed.');
        } catch (err) {
          say(err.message, true);
        }
        refresh();
      });
      cell(tr, '').appendChild(b);
      hosts.add(l.host);
    });
    fill('payments', (s.payments || []).slice().reverse(), (tr, p) => {
      cell(tr, when(p.at));
      cell(tr, p.url, 'url');
      cell(tr, p.error ? 'nothing' : (p.amount || p.coupons + ' coupons'));
      cell(tr, p.error ? 'refused: ' + p.error : String(p.status));
    });
    fill('receipts', (s.receipts || []).slice().reverse(), (tr, r) => {
      cell(tr, when(r.at));
      cell(tr, r.url, 'url');
      cell(tr, '#' + r.i + (r.paid > 1 ? ' (' + r.paid + ' coupons)' : ''));
      cell(tr, r.status + (r.reason ? ' (' + r.reason + ')' : ''));
    });
  }
  globalThis.ecouponsRefresh = refresh;

  $('pause').addEventListener('click', async () => {
    try {
      await ecoupons.setPaused(!paused);
      say(paused ? 'Payments resumed.' : 'Paused: the wallet pays nothing until you resume.');
    } catch (err) {
      say(err.message, true);
    }
    refresh();
  });
  $('forget').addEventListener('click', async () => {
    if (!confirm('Forget this wallet? Its keys, grants and coupons are deleted from this browser. Your main wallet can take back what it granted (ecoupons wallet reclaim).')) return;
    try {
      await ecoupons.forget();
      say('The wallet is forgotten. A new pairing code names a new key.');
    } catch (err) {
      say(err.message, true);
    }
    location.reload();
  });
  $('limit-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = e.target;
    try {
      await ecoupons.setLimit({ max: f.max.value, per: f.per.value, host: f.host.value });
      say('Limit set: at most ' + f.max.value + ' per ' + f.per.value + (f.host.value === '*' ? ' at all sites together.' : ' at ' + f.host.value + '.'));
      f.max.value = '';
    } catch (err) {
      say('The limit was not set: ' + err.message, true);
    }
    refresh();
  });
  $('bw-enable').addEventListener('click', () => setTimeout(refresh, 500));
  refresh();
})();
