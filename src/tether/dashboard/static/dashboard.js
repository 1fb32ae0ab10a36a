// Live refresh: every 2 s, fetch this page again and swap in each element marked data-live
// (by id), so counts and statuses move without a full reload. Forms (or the button that
// submits them) with data-confirm ask first.
"use strict";

async function refresh() {
  const live = document.querySelectorAll("[data-live][id]");
  if (live.length === 0) return;
  try {
    const response = await fetch(location.href);
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const element of live) {
      const replacement = fresh.getElementById(element.id);
      // Never swap the part someone is typing in: it catches up on the tick after they leave it.
      if (element.contains(document.activeElement)) continue;
      if (replacement && replacement.innerHTML !== element.innerHTML) {
        element.innerHTML = replacement.innerHTML;
      }
    }
    document.body.dataset.refreshed = String(Date.now());
  } catch (error) {
    // The server may be restarting: try again on the next tick.
  }
}

// Delegated, so forms swapped in by a refresh ask too.
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = (event.submitter && event.submitter.dataset.confirm) || form.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

document.addEventListener("DOMContentLoaded", () => {
  if (document.querySelector("[data-live]")) setInterval(refresh, 2000);
});
