// queuectl dashboard: live counts (server-sent events) and the live tail of a job's log.
// Plain JavaScript, no library. Text from the server is only ever set with textContent (never as HTML).
"use strict";

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function jobLink(id) {
  const a = el("a", id);
  a.href = "/jobs/" + encodeURIComponent(id);
  return a;
}

function fillRows(tbody, rows, empty, columns) {
  if (!tbody) return;
  const fresh = rows.map((row) => {
    const tr = document.createElement("tr");
    for (const cell of columns(row)) tr.appendChild(cell);
    return tr;
  });
  if (!fresh.length) {
    const tr = el("tr", null, "empty");
    const td = el("td", empty);
    td.colSpan = tbody.closest("table").querySelectorAll("thead th").length;
    tr.appendChild(td);
    fresh.push(tr);
  }
  tbody.replaceChildren(...fresh);
}

function showStatus(data) {
  for (const node of document.querySelectorAll("[data-count]")) {
    const n = data.counts[node.dataset.count];
    if (n !== undefined) node.textContent = Number(n).toLocaleString("en-US");
  }
  const oldest = document.getElementById("oldest-due");
  if (oldest) oldest.textContent = data.oldest_due ? "oldest due job waiting " + data.oldest_due : "";
  const total = document.getElementById("running-total");
  if (total) total.textContent = String(data.running_total);
  fillRows(document.getElementById("engines"), data.engines,
    "no engine running — start one with queuectl run",
    (e) => [el("td", e.id, "mono"), el("td", e.pid), el("td", e.workers), el("td", e.up),
            el("td", e.heartbeat + " ago"), el("td", e.running)]);
  fillRows(document.getElementById("running"), data.running, "nothing running", (j) => {
    const id = el("td", null, "mono");
    id.appendChild(jobLink(j.id));
    return [id, el("td", j.elapsed), el("td", j.command, "mono cmd")];
  });
}

function connectLive() {
  const badge = document.getElementById("live");
  if (!window.EventSource) {
    if (badge) badge.textContent = "no live updates in this browser";
    return;
  }
  const source = new EventSource("/events");
  source.onopen = () => { if (badge) { badge.textContent = "live"; badge.className = "live on"; } };
  source.onerror = () => { if (badge) { badge.textContent = "reconnecting"; badge.className = "live off"; } };
  source.onmessage = (event) => {
    try { showStatus(JSON.parse(event.data)); } catch (err) { console.error(err); }
  };
}

function followLog() {
  const pre = document.getElementById("log");
  if (!pre) return;
  const status = document.getElementById("log-status");
  const job = pre.dataset.job;
  const attempt = pre.dataset.attempt;
  const pinned = new URLSearchParams(location.search).has("attempt");
  let offset = -1;
  let first = true;
  async function poll() {
    let data;
    try {
      const url = "/api/jobs/" + encodeURIComponent(job) + "/log?offset=" + offset +
        (attempt ? "&attempt=" + encodeURIComponent(attempt) : "");
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) {
        const problem = await response.json().catch(() => ({ error: response.statusText }));
        if (status) status.textContent = problem.error || ("error " + response.status);
        if (response.status === 404) return;  // the job was deleted
        setTimeout(poll, 3000);
        return;
      }
      data = await response.json();
    } catch (err) {
      if (status) status.textContent = "connection lost; retrying";
      setTimeout(poll, 3000);
      return;
    }
    if (data.state !== pre.dataset.state || String(data.runs) !== pre.dataset.runs) {
      if (!pinned || data.state !== pre.dataset.state) { location.reload(); return; }
    }
    if (data.attempt === null) {
      // not run yet: nothing to show, keep watching for its first attempt
    } else if (first) {
      if (!data.missing) pre.textContent = (data.start > 0 ? "…\n" : "") + data.text;
      first = false;
    } else if (data.text) {
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.appendChild(document.createTextNode(data.text));
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
    offset = data.offset;
    if (status) status.textContent = data.live ? "following (live)" : (data.missing ? "no log file (the attempt printed nothing, or its log was deleted); showing the stored tail" : "");
    const more = data.offset < data.size;
    if (data.live || more || data.state === "processing" || data.state === "pending" || data.state === "failed") {
      setTimeout(poll, more ? 50 : 1000);
    }
  }
  poll();
}

function confirmForms() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  connectLive();
  followLog();
  confirmForms();
});
