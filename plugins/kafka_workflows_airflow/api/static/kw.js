// kafka-workflows pages in Airflow's UI: fills the page shell from the plugin's JSON API.
// Runs in an iframe of the Airflow UI (same origin: the UI's session cookie authenticates the
// API calls) and follows the UI's light/dark theme. Everything shown is escaped (esc()).
(() => {
  "use strict";
  const root = document.getElementById("kw");
  const ctx = JSON.parse(root.dataset.kw);
  const base = ctx.base;
  const enc = encodeURIComponent;
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

  // -- theme: the Airflow UI marks <html> with class "dark" or "light" --------------------------
  function parentDark() {
    try {
      if (window.parent !== window) {
        const cls = window.parent.document.documentElement.classList;
        if (cls.contains("dark")) return true;
        if (cls.contains("light")) return false;
      }
    } catch (e) { /* not same origin: fall back */ }
    return null;
  }
  function applyTheme() {
    let dark = parentDark();
    if (dark === null) {
      const t = localStorage.getItem("theme");
      dark = t === "dark" || ((!t || t === "system") && matchMedia("(prefers-color-scheme: dark)").matches);
    }
    document.documentElement.classList.toggle("dark", dark);
  }
  applyTheme();
  try {
    new MutationObserver(applyTheme).observe(window.parent.document.documentElement, {attributes: true, attributeFilter: ["class"]});
  } catch (e) { /* standalone page */ }
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);

  // -- helpers ------------------------------------------------------------------------------------
  async function api(path, opts = {}) {
    const r = await fetch(base + "/api" + path, {credentials: "same-origin", headers: {"Content-Type": "application/json"}, ...opts});
    let body = null;
    try { body = await r.json(); } catch (e) { /* no JSON */ }
    if (!r.ok) {
      const d = body && body.detail;
      const msg = Array.isArray(d) ? d.map((x) => (x.loc || []).slice(1).join(".") + ": " + x.msg).join("; ") : (d || r.statusText);
      const err = new Error(`${r.status}: ${msg}`);
      err.status = r.status;
      throw err;
    }
    return body;
  }
  const post = (path, body) => api(path, {method: "POST", body: JSON.stringify(body)});
  const url = {
    overview: () => `${base}/ui/`,
    workflow: (w) => `${base}/ui/workflows/${enc(w)}`,
    group: (w, g) => `${base}/ui/workflows/${enc(w)}/groups/${enc(g)}`,
    letters: (w, q) => `${base}/ui/workflows/${enc(w)}/dead-letters${q ? "?" + q : ""}`,
    runTab: (w, r) => `/dags/${enc(w)}/runs/${enc(r)}/plugin/kafka-run`,
  };
  const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en"));
  const badge = (s) => `<span class="badge s-${esc(String(s).split(" ")[0])}">${esc(s)}</span>`;
  function when(epoch) {
    if (!epoch) return "–";
    const s = Math.max(0, Date.now() / 1000 - epoch);
    const ago = s < 60 ? `${Math.round(s)} s` : s < 3600 ? `${Math.round(s / 60)} min` : s < 86400 ? `${Math.round(s / 3600)} h` : `${Math.round(s / 86400)} d`;
    return `<span title="${esc(new Date(epoch * 1000).toISOString())}">${ago} ago</span>`;
  }
  const iso = (t) => (t ? when(Date.parse(t) / 1000) : "–");
  function secs(s) {
    if (s === null || s === undefined) return "–";
    return s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`;
  }
  function bar(p, mini) {
    if (!p || !p.total) return `<div class="bar${mini ? " mini" : ""}"></div>`;
    const ok = (100 * p.completed) / p.total, bad = (100 * p.failed) / p.total;
    const label = mini ? "" : `<span class="label">${num(p.done)} / ${num(p.total)} (${p.percent} %)</span>`;
    return `<div class="bar${mini ? " mini" : ""}" data-percent="${p.percent}"><div class="ok" style="width:${ok}%"></div><div class="bad" style="width:${bad}%"></div>${label}</div>`;
  }
  // The lag trend: an inline SVG line over the last samples (oldest left).
  function sparkline(points) {
    if (!points || points.length < 2) return `<span class="muted">collecting…</span>`;
    const w = 160, h = 36, max = Math.max(1, ...points.map((p) => p[1]));
    const xy = points.map((p, i) => `${((i * w) / (points.length - 1)).toFixed(1)},${(h - 2 - ((h - 4) * p[1]) / max).toFixed(1)}`);
    return `<svg class="spark" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img" aria-label="lag trend, max ${max}"><polyline fill="none" stroke="currentColor" stroke-width="1.5" points="${xy.join(" ")}"/></svg>`;
  }
  const crumbs = (...parts) => `<div class="crumbs"><a href="${url.overview()}">Kafka workflows</a>${parts.map((p) => " › " + p).join("")}</div>`;
  let notice = "";
  const setNotice = (cls, text) => { notice = `<div class="notice ${cls}" id="kw-result">${esc(text)}</div>`; };
  const dialog = document.getElementById("kw-dialog");

  // A periodic render that pauses while a dialog is open and shows its errors in place.
  function every(ms, fn) {
    let stopped = false;
    const tick = async () => {
      if (!dialog.open) {
        try {
          if ((await fn()) === "stop") stopped = true;
        } catch (e) {
          root.innerHTML = `<div class="notice error">${esc(e.message)}</div>`;
          if (e.status === 404 || e.status === 403 || e.status === 401) stopped = true;
        }
      }
      if (!stopped) setTimeout(tick, ms);
    };
    tick();
  }

  // Ask for a reason and a confirmation; resolves to the reason, or null when cancelled.
  function confirmWithReason(title, text, label) {
    return new Promise((resolve) => {
      dialog.innerHTML = `<form method="dialog"><h3>${esc(title)}</h3><p>${esc(text)}</p>
        <label>Reason (required; recorded in the audit log with your name)<br><textarea id="kw-reason" required></textarea></label>
        <div class="toolbar"><button value="cancel" type="button" id="kw-cancel">Cancel</button>
        <button class="primary" id="kw-confirm" value="ok" disabled>${esc(label)}</button></div></form>`;
      const reason = dialog.querySelector("#kw-reason"), ok = dialog.querySelector("#kw-confirm");
      reason.addEventListener("input", () => { ok.disabled = !reason.value.trim(); });
      dialog.querySelector("#kw-cancel").onclick = () => { dialog.close(); resolve(null); };
      dialog.querySelector("form").onsubmit = (ev) => { ev.preventDefault(); dialog.close(); resolve(reason.value.trim()); };
      dialog.showModal();
      reason.focus();
    });
  }

  function auditTable(page) {
    if (!page.items.length) return `<p class="muted">No operations yet.</p>`;
    return `<table class="audit"><thead><tr><th>When</th><th>Operation</th><th>Group</th><th>By</th><th>Reason</th><th>Result</th></tr></thead><tbody>${page.items.map((c) => `<tr>
      <td>${when(c.at)}</td><td>${esc(c.op)} ${c.topic ? `<code>${esc(c.topic)}[${esc(c.partition)}]@${esc(c.offset)}</code>` : ""}${c.letters ? ` (${c.letters.length} letters)` : ""}</td>
      <td>${esc(c.group)}</td><td>${esc(c.by)}</td><td>${esc(c.reason)}</td>
      <td>${c.applied.map((a) => esc(a.result)).join("<br>") || (c.op === "replay" ? "replayed" : `<span class="muted">no answer</span>`)}</td></tr>`).join("")}</tbody></table>`;
  }

  // -- pages ----------------------------------------------------------------------------------------
  const pages = {};

  pages.overview = () => every(5000, async () => {
    const [rows, audit] = await Promise.all([api("/workflows"), api("/audit?limit=15")]);
    root.innerHTML = `<h1>Kafka workflows</h1><p class="muted">Every workflow's workers, lag, blocked partitions, dead letters and requests. Updates every 5 s.</p>
      <table id="kw-workflows"><thead><tr><th>Workflow</th><th class="num">Workers up</th><th>Groups</th><th class="num">Lag</th><th class="num">Blocked</th><th class="num">Dead letters</th><th>Requests</th></tr></thead><tbody>
      ${rows.map((w) => `<tr data-workflow="${esc(w.workflow)}"><td><a href="${url.workflow(w.workflow)}">${esc(w.workflow)}</a><div class="muted">${esc(w.description || "")}</div></td>
        <td class="num">${num(w.workers_up)}</td>
        <td>${w.units.map((u) => `<div><a href="${url.group(w.workflow, u.group)}">${esc(u.group)}</a> ${badge(u.up ? "up" : "down")}${u.blocked ? " " + badge("blocked") : ""}${u.paused ? " " + badge("paused") : ""}</div>`).join("")}</td>
        <td class="num">${num(w.lag)}</td><td class="num">${w.blocked ? badge(w.blocked + " blocked") : "0"}</td>
        <td class="num"><a href="${url.letters(w.workflow)}">${num(w.dead_letters)}</a></td>
        <td>${Object.entries(w.requests).map(([s, n]) => `${badge(s)} ${num(n)}`).join(" ") || `<span class="muted">–</span>`}</td></tr>`).join("")}
      </tbody></table><h2>Recent operations</h2>${auditTable(audit)}`;
  });

  pages.workflow = () => every(5000, async () => {
    let w;
    try { w = await api(`/workflows/${enc(ctx.dag_id)}`); } catch (e) {
      if (e.status === 404) { root.innerHTML = `<div class="notice">${esc(ctx.dag_id)} is not a Kafka workflow (no spec in dags/workflows/ names it).</div>`; return "stop"; }
      throw e;
    }
    root.innerHTML = `${crumbs(esc(w.workflow))}<h1>${esc(w.workflow)}</h1><p class="muted">${esc(w.description || "")}</p>
      <div class="cards"><div class="card">Workers up<b>${num(w.workers_up)}</b></div><div class="card">Lag<b>${num(w.lag)}</b></div>
      <div class="card">Blocked partitions<b>${num(w.blocked)}</b></div><div class="card">Dead letters<b><a href="${url.letters(w.workflow)}">${num(w.dead_letters)}</a></b></div></div>
      <h2>Workers, processors and stores</h2><table id="kw-units"><thead><tr><th>Kind</th><th>Name</th><th>Group</th><th class="num">Members</th><th>Health</th><th>Group state</th><th class="num">Lag</th><th class="num">Blocked</th><th class="num">Dead letters</th></tr></thead><tbody>
      ${w.units.map((u) => `<tr><td>${esc(u.kind)}</td><td>${esc(u.name)}</td><td><a href="${url.group(w.workflow, u.group)}">${esc(u.group)}</a></td><td class="num">${num(u.members)}</td>
        <td>${badge(u.up ? "up" : "down")}${u.paused ? " " + badge("paused") : ""}</td><td>${esc(u.state)}</td><td class="num">${num(u.lag)}</td><td class="num">${num(u.blocked)}</td>
        <td class="num"><a href="${url.letters(w.workflow, "group=" + enc(u.group))}">${num(u.dead_letters)}</a></td></tr>`).join("")}</tbody></table>
      ${Object.entries(w.stores).map(([store, page]) => `<h2>Recent requests of store ${esc(store)}</h2>${page.items.length ? `<table><thead><tr><th>Request</th><th>Status</th><th>Progress</th><th class="num">Completed</th><th class="num">Failed</th><th class="num">Total</th><th>Updated</th></tr></thead><tbody>
        ${page.items.map((r) => `<tr><td>${r.run_id ? `<a target="_top" href="${url.runTab(w.workflow, r.run_id)}">${esc(r.request_id)}</a>` : esc(r.request_id)}</td><td>${badge(r.status)}</td>
        <td>${bar({total: r.total, completed: r.completed, failed: r.failed}, true)}</td><td class="num">${num(r.completed)}</td><td class="num">${num(r.failed)}</td><td class="num">${num(r.total)}</td><td>${iso(r.updated_at)}</td></tr>`).join("")}</tbody></table>` : `<p class="muted">No requests yet.</p>`}`).join("")}
      <h2>Operations</h2>${auditTable(w.audit)}`;
  });

  async function act(op, body, what) {
    const reason = await confirmWithReason(`${op[0].toUpperCase() + op.slice(1)} ${what}?`,
      op === "skip" ? "The held message goes to the dead-letter topic, marked skipped, and the partition flows again." :
      op === "unblock" ? "The held message is retried now." : op === "pause" ? "Every worker of the group stops consuming until resumed." : "The group's workers consume again.",
      op[0].toUpperCase() + op.slice(1));
    if (reason === null) return;
    try {
      const r = await post(`/workflows/${enc(ctx.dag_id)}/groups/${enc(ctx.group)}/${op}`, {...body, reason});
      setNotice("ok", `${op} by ${r.command.by}: ${r.answers.map((a) => a.result).join("; ")}`);
    } catch (e) {
      setNotice("error", `${op} failed: ${e.message}`);
    }
    await renderGroup();
  }

  async function renderGroup() {
    const g = await api(`/workflows/${enc(ctx.dag_id)}/groups/${enc(ctx.group)}`);
    root.innerHTML = `${crumbs(`<a href="${url.workflow(ctx.dag_id)}">${esc(ctx.dag_id)}</a>`, esc(g.group))}
      <h1>${esc(g.group)} <span class="muted">(${esc(g.kind)} ${esc(g.name)})</span></h1>
      <div class="cards"><div class="card">Workers<b>${num(g.workers.length)}</b></div><div class="card">Group state<b>${esc(g.state)}</b></div>
      <div class="card">Lag<b>${num(g.lag)}</b></div><div class="card" id="kw-trend">Lag trend (${g.lag_history.length} samples)<br>${sparkline(g.lag_history)}</div>
      <div class="card">Dead letters<b><a href="${url.letters(ctx.dag_id, "group=" + enc(g.group))}">${num(g.dead_letters)}</a></b></div></div>
      <div class="toolbar"><button id="kw-pause">Pause group…</button><button id="kw-resume">Resume group…</button></div>${notice}
      <h2>Partitions</h2><table id="kw-partitions"><thead><tr><th>Partition</th><th>Worker</th><th class="num">Committed</th><th class="num">End</th><th class="num">Lag</th><th>State</th><th>Holding message</th><th></th></tr></thead><tbody>
      ${g.partitions.map((p) => `<tr data-tp="${esc(p.topic)}[${p.partition}]" data-state="${esc(p.state)}"><td><code>${esc(p.topic)}[${p.partition}]</code></td><td>${esc(p.worker || "–")}</td>
        <td class="num">${num(p.committed)}</td><td class="num">${num(p.end)}</td><td class="num">${num(p.lag)}</td><td>${badge(p.state)}</td>
        <td>${p.hold ? `offset <b>${esc(p.hold.offset)}</b>, key <code>${esc(p.hold.key)}</code>, ${esc(p.hold.failures)} failure(s), since ${when(p.hold.since)}<br><span class="muted">${esc(p.hold.error)}</span>` : ""}</td>
        <td>${p.hold ? `<div class="row-actions"><button class="danger" data-op="skip" data-offset="${esc(p.hold.offset)}">Skip…</button><button data-op="unblock" data-offset="${esc(p.hold.offset)}">Unblock…</button></div>` : ""}</td></tr>`).join("")}</tbody></table>
      <h2>Workers</h2><table><thead><tr><th>Worker</th><th>Partitions</th><th class="num">Handled</th><th class="num">Retried</th><th class="num">Dead-lettered</th><th>Reported</th></tr></thead><tbody>
      ${g.workers.map((w) => `<tr><td>${esc(w.worker)} ${w.paused ? badge("paused") : ""}</td><td>${esc((w.assigned || []).join(", "))}</td><td class="num">${num(w.handled)}</td><td class="num">${num(w.retried)}</td><td class="num">${num(w.dead_lettered)}</td><td>${when(w.at)}</td></tr>`).join("") || `<tr><td colspan="6" class="muted">No live worker.</td></tr>`}</tbody></table>
      <h2>Operations</h2>${auditTable(g.audit)}`;
    root.querySelector("#kw-pause").onclick = () => act("pause", {}, `group ${g.group}`);
    root.querySelector("#kw-resume").onclick = () => act("resume", {}, `group ${g.group}`);
    root.querySelectorAll("button[data-op]").forEach((b) => {
      const tr = b.closest("tr"), p = g.partitions.find((x) => `${x.topic}[${x.partition}]` === tr.dataset.tp);
      b.onclick = () => act(b.dataset.op, {topic: p.topic, partition: p.partition, offset: Number(b.dataset.offset)}, `${p.topic}[${p.partition}]@${b.dataset.offset}`);
    });
  }
  pages.group = () => every(2000, renderGroup);

  pages["dead-letters"] = async () => {
    const w = await api(`/workflows/${enc(ctx.dag_id)}`);
    const params = new URLSearchParams(location.search);
    const state = {offset: 0, limit: 25, selected: new Set(), detail: null, dry: null};
    const groups = [...new Set(w.units.map((u) => u.group))];
    root.innerHTML = `${crumbs(`<a href="${url.workflow(ctx.dag_id)}">${esc(ctx.dag_id)}</a>`, "dead letters")}<h1>Dead letters of ${esc(ctx.dag_id)}</h1>
      <form class="filters" id="kw-filter"><label>Group<select name="group"><option value="">all</option>${groups.map((g) => `<option>${esc(g)}</option>`).join("")}</select></label>
      <label>Topic<input name="topic" size="16"></label><label>Key<input name="key" size="12"></label><label>Error type<input name="error_type" size="14"></label>
      <label>Since<input name="since" type="datetime-local"></label><label>Until<input name="until" type="datetime-local"></label>
      <input type="hidden" name="fingerprint"><button class="primary" id="kw-apply">Filter</button><button type="button" id="kw-clear">Clear</button></form>
      <div id="kw-out"></div>`;
    const form = root.querySelector("#kw-filter");
    for (const [k, v] of params) if (form.elements[k]) form.elements[k].value = v;
    const query = () => {
      const q = new URLSearchParams();
      for (const el of form.elements) {
        if (!el.name || !el.value) continue;
        q.set(el.name, el.type === "datetime-local" ? new Date(el.value).toISOString() : el.value);
      }
      return q;
    };
    const filterBody = () => Object.fromEntries(query());
    const out = root.querySelector("#kw-out");
    let latest = 0;  // a slower, older answer never overwrites a newer one
    async function load() {
      const q = query(), mine = ++latest;
      let fps, page;
      try {
        [fps, page] = await Promise.all([api(`/workflows/${enc(ctx.dag_id)}/dead-letters/fingerprints?${q}`),
          api(`/workflows/${enc(ctx.dag_id)}/dead-letters?${q}&offset=${state.offset}&limit=${state.limit}`)]);
      } catch (e) {
        if (mine === latest) out.innerHTML = `<div class="notice error">${esc(e.message)}</div>`;
        return;
      }
      if (mine !== latest) return;
      const sel = state.selected.size;
      out.innerHTML = `<h2>By error fingerprint</h2><table id="kw-fingerprints"><thead><tr><th class="num">Letters</th><th>Error type</th><th>Normalised message</th><th>Groups</th><th></th></tr></thead><tbody>
        ${fps.map((f) => `<tr><td class="num">${num(f.count)}</td><td>${esc(f.error_type)}</td><td><code>${esc(f.example)}</code></td><td>${esc(f.groups.join(", "))}</td><td><a href="#" data-fp="${esc(f.fingerprint)}">show only these</a></td></tr>`).join("") || `<tr><td colspan="5" class="muted">None.</td></tr>`}</tbody></table>
        <h2>Letters <span class="muted" id="kw-total">${num(page.total)} matching</span></h2>
        <div class="toolbar"><button id="kw-dry">Dry run</button><button class="primary" id="kw-replay">Replay…</button>
        <span class="muted">${sel ? `${sel} selected` : "no selection: acts on every matching letter"}</span>
        <span style="flex:1"></span><button id="kw-prev" ${state.offset ? "" : "disabled"}>‹ Newer</button>
        <span class="muted">${page.total ? state.offset + 1 : 0}–${Math.min(state.offset + state.limit, page.total)} of ${num(page.total)}</span>
        <button id="kw-next" ${state.offset + state.limit < page.total ? "" : "disabled"}>Older ›</button></div>${notice}${state.dry || ""}
        <table id="kw-letters"><thead><tr><th></th><th>Dead-lettered</th><th>Key</th><th>Group</th><th>From</th><th>Error</th><th>Notes</th></tr></thead><tbody>
        ${page.items.map((l) => `<tr data-id="${esc(l.id)}"><td><input type="checkbox" ${state.selected.has(l.id) ? "checked" : ""}></td><td>${when(l.at)}</td><td><code>${esc(l.key)}</code></td><td>${esc(l.group)}</td>
          <td><code>${esc(l.original)}</code></td><td><b>${esc(l.error_type)}</b> ${esc(l.error)}</td>
          <td>${l.skipped_by ? badge("skipped") + ` by ${esc(l.skipped_by)}: ${esc(l.skip_reason)}` : ""}${l.replayed ? badge("replayed") + ` by ${esc(l.replayed.by)} ${when(l.replayed.at)} ` : ""}${l.replayed_from ? badge("replay") : ""} <a href="#" data-open="${esc(l.id)}">open</a></td></tr>`).join("") || `<tr><td colspan="7" class="muted">No dead letters match.</td></tr>`}</tbody></table>
        <div id="kw-detail">${state.detail || ""}</div>`;
      out.querySelectorAll("a[data-fp]").forEach((a) => { a.onclick = (ev) => { ev.preventDefault(); form.elements.fingerprint.value = a.dataset.fp; state.offset = 0; load(); }; });
      out.querySelectorAll("#kw-letters input[type=checkbox]").forEach((c) => { c.onchange = () => { const id = c.closest("tr").dataset.id; c.checked ? state.selected.add(id) : state.selected.delete(id); load(); }; });
      out.querySelectorAll("a[data-open]").forEach((a) => { a.onclick = async (ev) => {
        ev.preventDefault();
        try {
          const d = await api(`/workflows/${enc(ctx.dag_id)}/dead-letters/${enc(a.dataset.open)}`);
          state.detail = `<h2>Letter ${esc(d.id)}</h2><table>${Object.entries(d.headers).map(([k, v]) => `<tr><th>${esc(k)}</th><td><code>${esc(v)}</code></td></tr>`).join("")}</table>
            <p class="muted">Value: ${num(d.value_size)} bytes${d.value_truncated ? " (preview cut)" : ""}</p><pre>${esc(d.value_preview)}</pre>`;
        } catch (e) { state.detail = `<div class="notice error">${esc(e.message)}</div>`; }
        load();
      }; });
      const selection = () => (state.selected.size ? {ids: [...state.selected]} : {filter: filterBody()});
      out.querySelector("#kw-dry").onclick = async () => {
        try {
          const r = await post(`/workflows/${enc(ctx.dag_id)}/dead-letters/replay`, {...selection(), dry_run: true});
          state.dry = `<div class="notice" id="kw-dry-result">Dry run: ${r.count} letter(s) would move.<br>${r.moves.slice(0, 20).map((m) => `<code>${esc(m.id)}</code> → <code>${esc(m.to)}</code>`).join("<br>")}${r.count > 20 ? "<br>…" : ""}</div>`;
        } catch (e) { state.dry = `<div class="notice error">${esc(e.message)}</div>`; }
        load();
      };
      out.querySelector("#kw-replay").onclick = async () => {
        const reason = await confirmWithReason("Replay dead letters?", state.selected.size ? `${state.selected.size} selected letter(s) go back to their topic and are handled again.` : `Every letter matching the filter (${page.total}) goes back to its topic.`, "Replay");
        if (reason === null) return;
        try {
          const r = await post(`/workflows/${enc(ctx.dag_id)}/dead-letters/replay`, {...selection(), dry_run: false, reason});
          setNotice("ok", `Replayed ${r.count} letter(s) to ${[...new Set(r.moves.map((m) => m.to))].join(", ")}.`);
          state.selected.clear();
          state.dry = null;
        } catch (e) { setNotice("error", `replay failed: ${e.message}`); }
        load();
      };
      out.querySelector("#kw-prev").onclick = () => { state.offset = Math.max(0, state.offset - state.limit); load(); };
      out.querySelector("#kw-next").onclick = () => { state.offset += state.limit; load(); };
    }
    form.onsubmit = (ev) => { ev.preventDefault(); state.offset = 0; state.selected.clear(); state.dry = null; notice = ""; load(); };
    root.querySelector("#kw-clear").onclick = () => { form.reset(); form.elements.fingerprint.value = ""; state.offset = 0; load(); };
    load();
  };

  pages.run = () => every(1000, async () => {
    let r;
    try { r = await api(`/workflows/${enc(ctx.dag_id)}/runs/${enc(ctx.run_id)}`); } catch (e) {
      if (e.status === 404) { root.innerHTML = `<div class="notice">No Kafka request to follow for this run: ${esc(e.message.replace(/^404: /, ""))}.</div>`; return "stop"; }
      throw e;
    }
    root.innerHTML = `${crumbs(`<a href="${url.workflow(ctx.dag_id)}">${esc(ctx.dag_id)}</a>`, esc(ctx.run_id))}` + r.requests.map((q) => {
      const p = q.progress, m = q.meta || {};
      if (!p) return `<h1>${esc(q.step)}</h1><p class="muted" id="kw-status" data-status="not registered">Request <code>${esc(q.request_id)}</code> is not registered yet (the split has not committed it). Waiting…</p>`;
      return `<h1>Import progress ${badge(q.status)}</h1><p class="muted">Request <code>${esc(q.request_id)}</code> of store ${esc(q.store)}${p.terminal ? "" : " · updates every second"}</p>
        <div id="kw-status" data-status="${esc(q.status)}" data-percent="${p.percent}">${bar(p)}</div>
        <div class="cards"><div class="card">Completed<b>${num(p.completed)}</b></div><div class="card">Failed<b>${num(p.failed)}</b></div><div class="card">Total jobs<b>${num(p.total)}</b></div>
        <div class="card">Rate<b>${p.rate ? p.rate + " jobs/s" : "–"}</b></div><div class="card">${p.terminal ? "Took" : "ETA"}<b>${secs(p.terminal ? p.elapsed : p.eta)}</b></div></div>
        <h2>Rows</h2><p>${num(m.rows)} rows read, ${num(m.valid_rows)} valid, <b>${num(m.bad_rows)}</b> bad${m.source ? ` · source <code>${esc(m.source)}</code>` : ""}</p>
        ${(m.bad_examples || []).length ? `<table id="kw-bad-rows"><thead><tr><th class="num">Row</th><th class="num">Line</th><th>Column</th><th>Reason</th></tr></thead><tbody>${m.bad_examples.map((b) => `<tr><td class="num">${num(b.row)}</td><td class="num">${num(b.line)}</td><td>${esc(b.column || "")}</td><td>${esc(b.reason)}</td></tr>`).join("")}</tbody></table>` : ""}
        <h2>Failed jobs</h2>${q.failed_jobs.length ? `<table><thead><tr><th class="num">Job</th><th>Reason</th></tr></thead><tbody>${q.failed_jobs.map((f) => `<tr><td class="num">${f.job}</td><td>${esc(f.reason)}</td></tr>`).join("")}</tbody></table>${q.failed_jobs_truncated ? `<p class="muted">More failed jobs than shown.</p>` : ""}` : `<p class="muted">None.</p>`}`;
    }).join("");
    return r.requests.length && r.requests.every((q) => q.progress && q.progress.terminal) ? "stop" : undefined;
  });

  (pages[ctx.page] || (() => { root.textContent = "unknown page"; }))();
})();
