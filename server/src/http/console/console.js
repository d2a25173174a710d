// confhub console: the few things a page does with script. Every page works without it
// except copying. No value from the page is ever turned into markup.
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source || !navigator.clipboard) return;
  navigator.clipboard.writeText(source.textContent).then(
    () => { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 1500); },
    () => { button.textContent = "Copy failed"; }
  );
});

// Live pages: the server says which pairs changed (`/ui/events`, scoped to the signed-in
// token); a page showing one of them fetches itself again and swaps its main part in.
// The markup comes from the server, which escaped every value in it.
const watched = document.body.dataset.live;
if (watched && window.EventSource) {
  let busy = false;
  const reload = async () => {
    if (busy) return;
    busy = true;
    try {
      // The formats a reader opened stay open.
      const open = new Set([...document.querySelectorAll("#main details.format[open] pre")].map((pre) => pre.id));
      const response = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html").getElementById("main");
      const main = document.getElementById("main");
      if (!fresh || !main) return;
      for (const pre of fresh.querySelectorAll("details.format pre")) {
        if (open.has(pre.id)) pre.closest("details").open = true;
      }
      main.replaceWith(fresh);
      document.body.dataset.updated = String(Date.now());
    } finally {
      busy = false;
    }
  };
  const events = new EventSource("/ui/events");
  events.addEventListener("change", (event) => {
    const change = JSON.parse(event.data);
    if (change.all || watched === "*" || change.pairs.some(([s, e]) => `${s}/${e}` === watched)) reload();
  });
}
