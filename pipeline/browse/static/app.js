// Scriptorium browse: every string from the server is written as text (textContent, text nodes), never as
// HTML; the matched words of a snippet come marked by \u0002 ... \u0003 and become <mark> elements here.
"use strict";

const $ = (id) => document.getElementById(id);
let hits = [];
let words = [];  // [{el, start, end}] of the recording playing, by start
let current = -1;

function fmtTime(s) {
  const m = Math.floor(s / 60);
  return `${m}:${(s - 60 * m).toFixed(1).padStart(4, "0")}`;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function snippetNode(snippet) {
  const span = el("span", undefined, "snippet");
  const parts = snippet.split(/(\u0002[^\u0003]*\u0003)/);
  for (const p of parts) {
    if (p.startsWith("\u0002") && p.endsWith("\u0003")) span.appendChild(el("mark", p.slice(1, -1)));
    else if (p) span.appendChild(document.createTextNode(p.replace(/[\u0002\u0003]/g, "")));
  }
  return span;
}

function fileName(uri) {
  return uri.split("/").pop() || uri;
}

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function loadFacets() {
  const f = await getJSON("/api/facets");
  for (const [key, id] of [["languages", "language"], ["speakers", "speaker"]]) {
    for (const v of f[key]) {
      const o = el("option", v);
      o.value = v;
      $(id).appendChild(o);
    }
  }
}

async function runSearch(ev) {
  if (ev) ev.preventDefault();
  const params = new URLSearchParams();
  for (const [k, v] of new FormData($("search"))) if (v !== "") params.set(k, v);
  $("status").textContent = "searching…";
  try {
    hits = (await getJSON("/api/search?" + params)).hits;
  } catch (e) {
    $("status").textContent = "error: " + e.message;
    return;
  }
  const limit = 50;  // the API's default page
  $("status").textContent = hits.length >= limit
    ? `the first ${hits.length} segments (more match: add words or filters)`
    : `${hits.length} segment${hits.length === 1 ? "" : "s"}`;
  const ol = $("results");
  ol.replaceChildren();
  hits.forEach((h, i) => {
    const li = el("li");
    li.dataset.index = i;
    const box = el("input");
    box.type = "checkbox";
    box.className = "pick";
    box.title = "select for export";
    box.addEventListener("click", (e) => { e.stopPropagation(); updateScope(); });
    li.appendChild(box);
    li.appendChild(snippetNode(h.snippet));
    const meta = [fileName(h.uri), fmtTime(h.start), h.speaker, h.language,
      h.confidence === null ? null : `conf ${h.confidence.toFixed(2)}`, h.accepted === false ? "rejected" : null];
    li.appendChild(el("div", meta.filter((m) => m !== null && m !== undefined).join(" · "), "meta"));
    li.title = h.uri;
    li.tabIndex = 0;
    li.addEventListener("click", () => play(h, li));
    li.addEventListener("keydown", (e) => { if (e.key === "Enter") play(h, li); });
    ol.appendChild(li);
  });
  updateScope();
}

function selection() {
  const picked = [...document.querySelectorAll("#results li")].filter((li) => li.querySelector(".pick").checked);
  const chosen = picked.length ? picked.map((li) => hits[+li.dataset.index]) : hits;
  return chosen.map((h) => [h.recording_id, h.segment_index]);
}

function updateScope() {
  const n = document.querySelectorAll("#results .pick:checked").length;
  $("export-scope").textContent = n ? `${n} selected` : "the results shown";
}

async function exportAs(format) {
  const r = await fetch("/api/export", {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ format, segments: selection() }),
  });
  if (!r.ok) { $("status").textContent = "export failed: " + (await r.json()).error; return; }
  const name = (r.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
  const a = el("a");
  a.href = URL.createObjectURL(await r.blob());
  a.download = name ? name[1] : "export";
  a.click();
  URL.revokeObjectURL(a.href);
}

async function play(hit, li) {
  document.querySelectorAll("#results li.playing").forEach((x) => x.classList.remove("playing"));
  li.classList.add("playing");
  const audio = $("audio");
  const rec = await getJSON("/api/recording/" + encodeURIComponent(hit.recording_id));
  $("player-pane").hidden = false;
  $("rec-title").textContent = rec.uri;
  const tr = $("transcript");
  tr.replaceChildren();
  words = [];
  current = -1;
  for (const s of rec.segments) {
    const p = el("p", undefined, s.accepted === false ? "rejected" : "");
    p.appendChild(el("span", `${fmtTime(s.start)} ${s.speaker ? s.speaker + ": " : ""}`, "meta"));
    if (s.words.length) {
      for (const [w, start, end] of s.words) {
        const span = el("span", w, "word");
        span.dataset.start = start;
        span.addEventListener("click", () => { audio.currentTime = start; audio.play(); });
        p.appendChild(span);
        p.appendChild(document.createTextNode(" "));
        words.push({ el: span, start, end });
      }
    } else {
      p.appendChild(document.createTextNode(s.text));
    }
    tr.appendChild(p);
  }
  words.sort((a, b) => a.start - b.start);
  const src = "/audio/" + encodeURIComponent(hit.recording_id);
  const startAt = () => { audio.currentTime = hit.start; audio.play(); };
  if (audio.dataset.rid === hit.recording_id && audio.readyState >= 1) startAt();
  else {
    audio.dataset.rid = hit.recording_id;
    audio.addEventListener("loadedmetadata", startAt, { once: true });
    audio.src = src;
    audio.load();
  }
}

function follow() {
  const t = $("audio").currentTime;
  // the last word that started at or before t (words are few per recording: a scan is enough)
  let k = -1;
  for (let i = 0; i < words.length && words[i].start <= t; i++) k = i;
  if (k !== current) {
    if (current >= 0 && words[current]) words[current].el.classList.remove("current");
    current = k;
    if (k >= 0) {
      words[k].el.classList.add("current");
      words[k].el.scrollIntoView({ block: "nearest" });
    }
  }
  requestAnimationFrame(follow);
}

document.addEventListener("DOMContentLoaded", () => {
  $("search").addEventListener("submit", runSearch);
  for (const b of document.querySelectorAll("#exports button")) b.addEventListener("click", () => exportAs(b.dataset.format));
  loadFacets().catch((e) => { $("status").textContent = "error: " + e.message; });
  requestAnimationFrame(follow);
});
