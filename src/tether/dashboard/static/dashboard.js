// Live refresh: every 2 s, fetch this page again and swap in each element marked data-live
// (by id), so counts and statuses move without a full reload. Forms with data-confirm ask first.
"use strict";

async function refresh() {
  const live = document.querySelectorAll("[data-live][id]");
  if (live.length === 0) return;
  try {
    const response = await fetch(location.href, { headers: { "X-Tether-Live": "1" } });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const element of live) {
      const replacement = fresh.getElementById(element.id);
      if (replacement && replacement.innerHTML !== element.innerHTML) {
        element.innerHTML = replacement.innerHTML;
      }
    }
    document.body.dataset.refreshed = String(Date.now());
  } catch (error) {
    // The server may be restarting: try again on the next tick.
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  if (document.querySelector("[data-live]")) setInterval(refresh, 2000);
});
