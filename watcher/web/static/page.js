// The status page's one script. It asks the JSON API for the page's revision every few
// seconds; when the revision changes it fetches this page again and swaps in its <main>,
// which the server rendered and escaped (nothing from the API is inserted as markup here).
// Between fetches the "in state" and "polled" cells tick from their data-since stamps.
// Without it, the page still works: <noscript> makes it reload itself.
"use strict";
(() => {
  const main = () => document.querySelector("main[data-api]");
  const first = main();
  if (!first) return;
  const every = Math.max(1, Number(first.dataset.refresh) || 5) * 1000;
  const live = document.querySelector("[data-live]");
  let skew = 0; // the server's clock minus ours, in ms

  const pad = (n) => String(n).padStart(2, "0");
  const duration = (seconds) => {
    const s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), x = s % 60;
    if (d) return `${d}d ${pad(h)}h ${pad(m)}m`;
    if (h) return `${h}h ${pad(m)}m ${pad(x)}s`;
    if (m) return `${m}m ${pad(x)}s`;
    return `${x}s`;
  };
  const tick = () => {
    const now = Date.now() + skew;
    for (const cell of document.querySelectorAll("[data-since]")) {
      const at = Date.parse(cell.dataset.since);
      if (!Number.isNaN(at)) cell.textContent = duration((now - at) / 1000);
    }
  };
  const clock = (stamp) => {
    const at = Date.parse(stamp);
    if (!Number.isNaN(at)) skew = at - Date.now();
  };

  const refresh = async () => {
    const current = main();
    try {
      const answer = await fetch(current.dataset.api, { cache: "no-store", credentials: "same-origin" });
      if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
      const doc = await answer.json();
      const revision = doc.revision ?? JSON.stringify(doc.job ?? doc);
      if (revision !== current.dataset.revision) {
        const page = await fetch(location.href, { cache: "no-store", credentials: "same-origin" });
        if (!page.ok) throw new Error(`HTTP ${page.status}`);
        const next = new DOMParser().parseFromString(await page.text(), "text/html");
        const fresh = next.querySelector("main[data-api]");
        if (fresh) {
          fresh.dataset.revision = revision;
          current.replaceWith(fresh);
          const bar = next.querySelector("header.bar");
          if (bar) document.querySelector("header.bar")?.replaceWith(bar);
        }
      }
      clock(doc.now);
      if (live) {
        live.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
        live.classList.remove("stale");
      }
    } catch (error) {
      if (live) {
        live.textContent = `not updating (${error.message}); retrying`;
        live.classList.add("stale");
      }
    }
    tick();
    setTimeout(refresh, every);
  };

  clock(first.dataset.now);
  setInterval(tick, 1000);
  setTimeout(refresh, every);
})();
