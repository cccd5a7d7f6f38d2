// castwatch dashboard: polls /api/overview and redraws only the rows that changed,
// so a half-typed note or the scroll position survives every refresh.
"use strict";

const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
const CSRF = meta("csrf-token");
const FIXED_OPERATOR = meta("operator");
const REFRESH_MS = Number(meta("refresh-ms"));
const STATE_ORDER = { silent: 0, lagging: 1, live: 2, waiting: 3 };

let latest = null;
const drawn = new WeakMap(); // element -> the HTML it was built from

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function utc(iso) {
  return iso ? iso.slice(5, 19).replace("T", " ") : "";
}

function span(seconds) {
  const s = Math.round(seconds);
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, "0")}`;
}

function stateBadge(stream) {
  const label = {
    live: "live",
    lagging: `lagging ${span(stream.state_seconds)}`,
    silent: `silent ${span(stream.state_seconds)}`,
    waiting: "waiting",
  }[stream.state];
  return `<span class="badge ${stream.state}">${esc(label)}</span>`;
}

function licence(licensed) {
  return licensed ? '<span class="badge licensed">licensed</span>' : '<span class="badge unlicensed">unlicensed</span>';
}

function build(tag, className, k, html) {
  const el = document.createElement(tag);
  el.dataset.key = k;
  el.className = className;
  el.innerHTML = html;
  drawn.set(el, html);
  return el;
}

// Keep container's children in the order of items, one element per key; rebuild an
// element only when its HTML changed and it does not hold the keyboard focus.
function reconcile(container, items, key, render, tag, className = "") {
  const old = new Map();
  for (const el of container.children) old.set(el.dataset.key, el);
  let cursor = container.firstElementChild; // every child before it is in place
  for (const item of items) {
    const k = key(item);
    const html = render(item);
    let el = old.get(k);
    old.delete(k);
    if (el && drawn.get(el) !== html && !el.contains(document.activeElement)) {
      const fresh = build(tag, className, k, html);
      container.replaceChild(fresh, el);
      if (cursor === el) cursor = fresh;
      el = fresh;
    }
    el = el || build(tag, className, k, html);
    if (el === cursor) cursor = cursor.nextElementSibling;
    else container.insertBefore(el, cursor);
  }
  for (const el of old.values()) el.remove();
}

function renderCounts(c) {
  const items = [
    ["streams", c.streams], ["live", c.live], ["lagging", c.lagging], ["silent", c.silent], ["waiting", c.waiting],
    ["open infringements", c.open], ["acknowledged", c.acknowledged],
  ];
  document.getElementById("counts").innerHTML = items.map(([k, v]) => `<li>${esc(k)} <b>${v}</b></li>`).join("");
}

function renderHourly(hourly) {
  const svg = document.getElementById("hourly");
  const max = Math.max(1, ...hourly.map((h) => h.plays));
  const w = 960 / hourly.length;
  svg.innerHTML = hourly.map((h, i) => {
    const ph = (h.plays / max) * 56;
    const ih = (h.infringements / max) * 56;
    const tip = `${utc(h.hour)} UTC: ${h.plays} plays, ${h.infringements} unlicensed`;
    return `<g><title>${esc(tip)}</title><rect class="plays" x="${i * w + 1}" y="${60 - ph}" width="${w - 2}" height="${ph}"></rect>` +
      `<rect class="infr" x="${i * w + 1}" y="${60 - ih}" width="${w - 2}" height="${ih}"></rect></g>`;
  }).join("");
}

function renderStreams(data) {
  const text = document.getElementById("filter").value.trim().toLowerCase();
  const shown = data.streams
    .filter((s) => !text || `${s.id} ${s.name ?? ""} ${s.licensee ?? ""} ${s.state}`.toLowerCase().includes(text))
    .sort((a, b) => STATE_ORDER[a.state] - STATE_ORDER[b.state] || a.id.localeCompare(b.id));
  reconcile(document.getElementById("streams"), shown, (s) => s.id, (s) => {
    const name = s.registered ? `${esc(s.name)} · ${esc(s.licensee)} (${esc(s.territory)})` : "not registered";
    const p = s.playing;
    const playing = p
      ? `${esc(p.title)} <span class="sub">${esc(p.artist)}</span> ${licence(p.licensed)}<div class="sub">since ${utc(p.started_at)}</div>`
      : '<span class="sub">—</span>';
    return `<td><b>${esc(s.id)}</b><div class="sub">${name}</div></td><td>${stateBadge(s)}</td>` +
      `<td>${playing}</td><td class="sub">${utc(s.last_audio_at)}</td>`;
  }, "tr");
  const note = [];
  if (shown.length !== data.streams.length) note.push(`${shown.length} of ${data.streams.length} streams match the filter.`);
  if (data.streams_truncated) note.push(`Only the first ${data.streams.length} streams are shown.`);
  if (!data.streams.length) note.push("No streams yet: register one with `castwatch streams add`, or start sending audio.");
  document.getElementById("streams-note").textContent = note.join(" ");
}

function renderRecent(recent) {
  reconcile(document.getElementById("recent"), recent, (d) => d.event_id, (d) => {
    const state = d.state === "started" ? ' <span class="badge playing">playing</span>' : "";
    return `<td class="sub">${utc(d.started_at)}</td><td>${esc(d.stream_id)}</td>` +
      `<td>${esc(d.title)} <span class="sub">${esc(d.artist)}</span>${state}</td>` +
      `<td class="num">${d.score.toFixed(2)}</td><td>${licence(d.licensed)}</td>`;
  }, "tr");
}

function renderInfringements(items) {
  const box = document.getElementById("infringements");
  reconcile(box, items, (i) => i.event_id, (i) => {
    const end = i.ended_at ? utc(i.ended_at).slice(6) : "now";
    const seconds = ((i.ended_at ? Date.parse(i.ended_at) : Date.parse(latest.now)) - Date.parse(i.started_at)) / 1000;
    const ref = i.ref_end_s === null ? `${i.ref_start_s.toFixed(1)} s` : `${i.ref_start_s.toFixed(1)}–${i.ref_end_s.toFixed(1)} s`;
    const by = i.updated_by ? `<dt>${esc(i.status)}</dt><dd>by ${esc(i.updated_by)}, ${utc(i.updated_at)}${i.note ? ` — ${esc(i.note)}` : ""}</dd>` : "";
    const ack = i.status === "open" ? '<button data-action="acknowledge">Acknowledge</button>' : "";
    return `<div><span class="title">${esc(i.title)}</span> <span class="sub">${esc(i.artist)}${i.isrc ? ` · ${esc(i.isrc)}` : ""}</span>` +
      ` <span class="badge ${esc(i.status)}">${esc(i.status)}</span>` +
      `<dl><dt>holder</dt><dd>${esc(i.holders || "unknown")}</dd>` +
      `<dt>stream</dt><dd>${esc(i.stream_id)}${i.stream_name ? ` (${esc(i.stream_name)})` : ""}</dd>` +
      `<dt>aired</dt><dd>${utc(i.started_at)}–${end} UTC (${clock(seconds)})</dd>` +
      `<dt>recording</dt><dd>${ref} · score ${i.score.toFixed(2)} · speed ${i.speed.toFixed(3)}</dd>${by}</dl></div>` +
      `<div class="actions"><input name="note" maxlength="1000" placeholder="note (optional)" aria-label="note">` +
      `${ack}<button data-action="resolve">Resolve</button></div><div class="error" role="alert"></div>`;
  }, "div", "infr");
  if (!items.length) box.innerHTML = '<p class="empty">No unresolved infringements.</p>';
}

function render(data) {
  latest = data;
  renderCounts(data.counts);
  renderHourly(data.hourly);
  renderStreams(data);
  renderRecent(data.recent);
  renderInfringements(data.infringements);
}

function setStatus(text, error) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.classList.toggle("error", Boolean(error));
}

async function refresh() {
  try {
    const response = await fetch("/api/overview", { headers: { Accept: "application/json" }, credentials: "same-origin" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    render(body);
    setStatus(`updated ${utc(body.now).slice(6)} UTC`, false);
  } catch (e) {
    setStatus(`not updating: ${e.message}`, true);
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

async function act(row, action) {
  const operator = FIXED_OPERATOR || document.getElementById("operator").value.trim();
  const error = row.querySelector(".error");
  if (!operator) {
    error.textContent = "Type your name in the Operator box first.";
    return;
  }
  const form = new URLSearchParams({ operator, note: row.querySelector("input[name=note]").value });
  for (const b of row.querySelectorAll("button")) b.disabled = true;
  try {
    const response = await fetch(`/api/infringements/${encodeURIComponent(row.dataset.key)}/${action}`, {
      method: "POST", body: form, credentials: "same-origin", headers: { "X-CSRF-Token": CSRF },
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    document.activeElement.blur();
  } catch (e) {
    error.textContent = `${action} failed: ${e.message}`;
    for (const b of row.querySelectorAll("button")) b.disabled = false;
  }
}

document.getElementById("infringements").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (button) act(button.closest(".infr"), button.dataset.action);
});
document.getElementById("filter").addEventListener("input", () => latest && renderStreams(latest));
const operatorInput = document.getElementById("operator");
if (FIXED_OPERATOR) {
  document.getElementById("operator-box").hidden = true;
  document.getElementById("operator-fixed").textContent = `acting as ${FIXED_OPERATOR}`;
} else {
  operatorInput.value = localStorage.getItem("castwatch-operator") || "";
  operatorInput.addEventListener("change", () => localStorage.setItem("castwatch-operator", operatorInput.value.trim()));
}
refresh();
