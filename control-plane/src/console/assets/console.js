// Mission Control console: follows the board live (server-sent events), refreshes the
// page's live regions without a reload, sends forms with the session's CSRF token, and
// shows the running agent's terminal. No framework, no CDN.
(() => {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf"]')?.content || "";
  const flash = document.getElementById("flash");
  const rail = document.getElementById("activity");

  function say(text, error) {
    if (!flash) return;
    flash.textContent = text;
    flash.className = error ? "error" : "";
  }

  // Replaces the live regions of the main zone with fresh ones from the server, leaving
  // alone any region the person is typing in.
  let refreshing = false, again = false, timer = null;
  async function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const url = new URL(location.href);
      url.searchParams.set("fragment", "main");
      const r = await fetch(url, { headers: { "x-requested-with": "fetch" }, credentials: "same-origin" });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString("<div>" + (await r.text()) + "</div>", "text/html");
      for (const fresh of doc.querySelectorAll("[data-live]")) {
        const cur = document.querySelector('[data-live="' + fresh.dataset.live + '"]');
        if (!cur) continue;
        if (cur.contains(document.activeElement) && document.activeElement !== document.body) continue;
        if (cur.innerHTML !== fresh.innerHTML) cur.innerHTML = fresh.innerHTML;
      }
    } catch (e) { /* the next event or poll tries again */ }
    finally {
      refreshing = false;
      if (again) { again = false; schedule(); }
    }
  }
  function schedule() { clearTimeout(timer); timer = setTimeout(refresh, 120); }

  for (const el of document.querySelectorAll("[data-poll]")) {
    setInterval(schedule, Math.max(500, Number(el.dataset.poll) || 2000));
  }

  // The activity rail: every event on the board, newest first.
  function railItem(ev) {
    if (!rail) return;
    const li = document.createElement("li");
    li.dataset.event = ev.id;
    const t = document.createElement("span"); t.className = "t"; t.textContent = (ev.at || "").slice(11, 19) + " ";
    const a = document.createElement("a"); a.href = "/tickets/" + ev.ticket_id; a.textContent = "#" + ev.ticket_id;
    const k = document.createElement("span"); k.className = "k"; k.textContent = " " + ev.kind + " ";
    const m = document.createElement("span");
    m.textContent = (ev.from && ev.to && ev.from !== ev.to ? ev.from + " → " + ev.to + " " : "") + ev.message;
    li.append(t, a, k, m);
    rail.prepend(li);
    while (rail.children.length > 200) rail.lastChild.remove();
  }
  if (rail && window.EventSource) {
    const es = new EventSource("/live/events?recent=100");
    es.addEventListener("event", (e) => {
      try { railItem(JSON.parse(e.data)); } catch (_) {}
      schedule();
    });
  }

  // Forms: sent with fetch and the CSRF token; the answer is shown, the page refreshed.
  document.addEventListener("submit", async (e) => {
    const form = e.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-fetch")) return;
    e.preventDefault();
    if (form.dataset.confirm && !confirm(form.dataset.confirm)) return;
    const body = new URLSearchParams(new FormData(form));
    try {
      const r = await fetch(form.action, {
        method: "POST", body, credentials: "same-origin",
        headers: { "x-csrf-token": csrf, "x-requested-with": "fetch" },
      });
      const j = await r.json().catch(() => ({ ok: false, message: "the console answered " + r.status }));
      say(j.message, !j.ok);
      if (j.ok) {
        if (!form.closest("[data-keep]") || form.classList.contains("type") || form.id === "create") form.reset();
        if (document.activeElement) document.activeElement.blur();
        schedule();
      }
    } catch (err) {
      say("the console could not be reached: " + err, true);
    }
  });

  // The agent's terminal, rendered on the server from the real output.
  const term = document.getElementById("term");
  if (term && window.EventSource) {
    const es = new EventSource("/live/tickets/" + term.dataset.ticket + "/terminal");
    es.addEventListener("screen", (e) => {
      const stick = term.scrollTop + term.clientHeight >= term.scrollHeight - 4;
      term.innerHTML = e.data;
      if (stick) term.scrollTop = term.scrollHeight;
    });
    es.addEventListener("end", () => es.close());
  }
})();
