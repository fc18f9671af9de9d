// ecoupons.js: the ecoupons browser wallet as a library, for a web app on
// any origin. Load it from the gate,
//   <script src="https://news.example/.well-known/ecoupons/ecoupons.js"></script>
// then
//   const ecoupons = await ecouponsLoaded;
//   const resp = await ecoupons.fetch('https://news.example/premium/a.html');
// The wallet (wallet.wasm, the Go wallet) runs in the page; its keys,
// grants and lanes are the app's origin's, in its IndexedDB. The gate must
// list the app's origin in cors_origins.
(() => {
  const base = new URL('./', document.currentScript.src).href;
  const load = (src) => new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = src;
    s.onload = resolve;
    s.onerror = () => reject(new Error('could not load ' + src));
    document.head.appendChild(s);
  });
  globalThis.ecouponsLoaded = (async () => {
    if (typeof Go === 'undefined') await load(base + 'wasm_exec.js');
    const go = new Go();
    const ready = new Promise((resolve) => { globalThis.ecouponsReady = resolve; });
    const { instance } = await WebAssembly.instantiateStreaming(fetch(base + 'wallet.wasm'), go.importObject);
    go.run(instance);
    return ready;
  })();
})();
