// kafka-workflows pages in Airflow's UI: fills the page shell from the plugin's JSON API.
// Runs in an iframe of the Airflow UI (same origin: the UI's session cookie authenticates the
// API calls) and follows the UI's light/dark theme.
//
// Escaping by construction: every element is made by h() below, and every value becomes a text
// node or an attribute value through the DOM API. No HTML is ever parsed from a string (no
// innerHTML, no template with data), so a value written by any producer can never become markup
// or script. A value of the wrong type shows as "unknown" (or "–"); a row that cannot be shown
// becomes one "unreadable row" line, never a blank page. The page's Content-Security-Policy
// (script-src 'self') forbids inline script as a second wall.
(() => {
  "use strict";
  const root = document.getElementById("kw");
  const ctx = JSON.parse(root.dataset.kw);
  const base = typeof ctx.base === "string" ? ctx.base : "";
  const enc = (s) => encodeURIComponent(String(s ?? ""));
  const SVG = "http://www.w3.org/2000/svg";

  // -- the one rendering helper -------------------------------------------------------------------
  // h(tag, attrs, ...children): attrs are set with setAttribute (values are strings, never parsed),
  // `on<event>` attrs are listeners, `style` an object applied through the CSSOM; children are nodes,
  // or any other value, which becomes a text node. Arrays are flattened; null/undefined/false vanish.
  function text(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "object") {
      try { return JSON.stringify(v); } catch (e) { return "unknown"; }
    }
    return String(v);
  }
  function safeHref(v) {
    const s = text(v);
    return /^(https?:\/\/|\/|#|\?)/i.test(s) || !/^[a-z][a-z0-9+.-]*:/i.test(s) ? s : "#";
  }
  function h(tag, attrs, ...children) {
    const svg = tag === "svg" || tag === "polyline";
    const el = svg ? document.createElementNS(SVG, tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "style") Object.assign(el.style, v);
      else el.setAttribute(k, k === "href" ? safeHref(v) : v === true ? "" : text(v));
    }
    fill(el, children);
    return el;
  }
  function fill(el, children) {
    for (const c of [children].flat(Infinity)) {
      if (c === null || c === undefined || c === false || c === "") continue;
      el.append(c instanceof Node ? c : text(c));
    }
    return el;
  }
  const show = (target, ...children) => { target.replaceChildren(); fill(target, children); };
  // Rows of a table: each made by `make`; a row whose data breaks `make` is one muted line instead.
  function rows(items, make, colspan, empty) {
    const list = Array.isArray(items) ? items : [];
    if (!list.length && empty) return h("tr", {}, h("td", {colspan, class: "muted"}, empty));
    return list.map((item) => {
      try { return make(item); } catch (e) {
        return h("tr", {class: "unreadable"}, h("td", {colspan, class: "muted"}, "unreadable row (unknown fields)"));
      }
    });
  }
  const list = (v) => (Array.isArray(v) ? v : []);

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
      const msg = Array.isArray(d) ? d.map((x) => list(x && x.loc).slice(1).join(".") + ": " + text(x && x.msg)).join("; ") : text(d || r.statusText);
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
  const finite = (n) => (typeof n === "number" || (typeof n === "string" && n.trim() !== "")) && Number.isFinite(Number(n));
  const num = (n) => (n === null || n === undefined ? "–" : finite(n) ? Number(n).toLocaleString("en") : "unknown");
  const badge = (s) => h("span", {class: `badge s-${text(s).split(" ")[0]}`}, text(s));
  // "12 s ago" with the exact time as its title; a time that is not a number of seconds is "unknown".
  function when(epoch) {
    if (epoch === null || epoch === undefined || epoch === "" || epoch === 0) return "–";
    if (!finite(epoch)) return h("span", {class: "muted"}, "unknown");
    const at = new Date(Number(epoch) * 1000);
    if (Number.isNaN(at.getTime())) return h("span", {class: "muted"}, "unknown");
    const s = Math.max(0, Date.now() / 1000 - Number(epoch));
    const ago = s < 60 ? `${Math.round(s)} s` : s < 3600 ? `${Math.round(s / 60)} min` : s < 86400 ? `${Math.round(s / 3600)} h` : `${Math.round(s / 86400)} d`;
    return h("span", {title: at.toISOString()}, `${ago} ago`);
  }
  const iso = (t) => {
    if (!t) return "–";
    const ms = Date.parse(text(t));
    return Number.isNaN(ms) ? h("span", {class: "muted"}, "unknown") : when(ms / 1000);
  };
  function secs(s) {
    if (s === null || s === undefined) return "–";
    if (!finite(s)) return "unknown";
    s = Number(s);
    return s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`;
  }
  const pct = (part, total) => Math.min(100, Math.max(0, (100 * (Number(part) || 0)) / total));
  function bar(p, mini) {
    const cls = `bar${mini ? " mini" : ""}`;
    if (!p || !finite(p.total) || !(Number(p.total) > 0)) return h("div", {class: cls});
    const total = Number(p.total);
    return h("div", {class: cls, "data-percent": finite(p.percent) ? p.percent : null},
      h("div", {class: "ok", style: {width: `${pct(p.completed, total)}%`}}),
      h("div", {class: "bad", style: {width: `${pct(p.failed, total)}%`}}),
      mini ? null : h("span", {class: "label"}, `${num(p.done)} / ${num(p.total)} (${finite(p.percent) ? p.percent : "unknown"} %)`));
  }
  // The lag trend: an SVG line over the last samples (oldest left).
  function sparkline(points) {
    const pts = list(points).filter((p) => Array.isArray(p) && finite(p[1]));
    if (pts.length < 2) return h("span", {class: "muted"}, "collecting…");
    const w = 160, ht = 36, max = Math.max(1, ...pts.map((p) => Number(p[1])));
    const xy = pts.map((p, i) => `${((i * w) / (pts.length - 1)).toFixed(1)},${(ht - 2 - ((ht - 4) * Number(p[1])) / max).toFixed(1)}`);
    return h("svg", {class: "spark", width: w, height: ht, viewBox: `0 0 ${w} ${ht}`, role: "img", "aria-label": `lag trend, max ${max}`},
      h("polyline", {fill: "none", stroke: "currentColor", "stroke-width": "1.5", points: xy.join(" ")}));
  }
  const crumbs = (...parts) => h("div", {class: "crumbs"}, h("a", {href: url.overview()}, "Kafka workflows"), parts.map((p) => [" › ", p]));
  const table = (attrs, head, body) => h("table", attrs, h("thead", {}, h("tr", {}, head.map((c) => (c instanceof Node ? c : h("th", {}, c))))), h("tbody", {}, body));
  const thNum = (t) => h("th", {class: "num"}, t);
  const tdNum = (n) => h("td", {class: "num"}, num(n));
  // A W3C trace id (checked server-side: 32 hex digits), linked to the trace UI when [kafka_workflows] trace_ui_url is set.
  const traceRef = (id, href) => (id ? h("span", {class: "kw-trace", "data-trace-id": text(id)}, "trace ",
    href ? h("a", {href, target: "_blank", rel: "noopener noreferrer"}, h("code", {}, text(id))) : h("code", {}, text(id))) : null);
  const card = (label, value, attrs) => h("div", {class: "card", ...(attrs || {})}, label, h("b", {}, value));
  const error = (message) => h("div", {class: "notice error"}, message);
  let notice = null;
  const setNotice = (cls, message) => { notice = {cls, message}; };
  const noticeNode = () => (notice ? h("div", {class: `notice ${notice.cls}`, id: "kw-result"}, notice.message) : null);
  const dialog = document.getElementById("kw-dialog");

  // A periodic render that pauses while a dialog is open and shows its errors in place.
  function every(ms, fn) {
    let stopped = false;
    const tick = async () => {
      if (!dialog.open) {
        try {
          if ((await fn()) === "stop") stopped = true;
        } catch (e) {
          show(root, error(e && e.message));
          if (e.status === 404 || e.status === 403 || e.status === 401) stopped = true;
        }
      }
      if (!stopped) setTimeout(tick, ms);
    };
    tick();
  }

  // Ask for a reason and a confirmation; resolves to the reason, or null when cancelled.
  function confirmWithReason(title, explanation, label) {
    return new Promise((resolve) => {
      const reason = h("textarea", {id: "kw-reason", required: true});
      const ok = h("button", {class: "primary", id: "kw-confirm", value: "ok", disabled: true}, label);
      const cancel = h("button", {value: "cancel", type: "button", id: "kw-cancel"}, "Cancel");
      const form = h("form", {method: "dialog"}, h("h3", {}, title), h("p", {}, explanation),
        h("label", {}, "Reason (required; recorded in the audit log with your name)", h("br"), reason),
        h("div", {class: "toolbar"}, cancel, ok));
      reason.addEventListener("input", () => { ok.disabled = !reason.value.trim(); });
      cancel.onclick = () => { dialog.close(); resolve(null); };
      form.onsubmit = (ev) => { ev.preventDefault(); dialog.close(); resolve(reason.value.trim()); };
      show(dialog, form);
      dialog.showModal();
      reason.focus();
    });
  }

  function auditTable(page) {
    const items = list(page && page.items);
    if (!items.length) return h("p", {class: "muted"}, "No operations yet.");
    return table({class: "audit"}, ["When", "Operation", "Group", "By", "Reason", "Result"], rows(items, (c) => {
      const applied = list(c.applied);
      return h("tr", {},
        // The API serves every record in one shape, a field it could not read as null: every operation has
        // a time, and a replay its letters, so null there is shown as unknown.
        h("td", {}, c.at === null || c.at === undefined ? h("span", {class: "muted"}, "unknown") : when(c.at)),
        h("td", {}, text(c.op), " ", c.topic ? h("code", {}, `${text(c.topic)}[${text(c.partition)}]@${text(c.offset)}`) : null,
          c.op === "replay" || (c.letters !== undefined && c.letters !== null)
            ? ` (${Array.isArray(c.letters) ? num(c.letters.length) : "unknown"} letters)` : null),
        h("td", {}, text(c.group)), h("td", {}, text(c.by)), h("td", {}, text(c.reason)),
        h("td", {}, applied.length ? applied.map((a, i) => [i ? h("br") : null, text(a && a.result)])
          : c.op === "replay" ? "replayed" : c.result ? [text(c.result), c.count != null ? ` (${num(c.count)} sent)` : null]
          : h("span", {class: "muted"}, "no answer")));
    }, 6));
  }

  // -- pages ----------------------------------------------------------------------------------------
  const pages = {};

  // A group's circuit breaker: nothing when closed or not declared; else its state and why.
  const breakerBadge = (b) => b && typeof b === "object" && b.state !== "closed"
    ? h("span", {class: "kw-breaker", "data-breaker": text(b.state), title: text(b.reason)},
        badge(b.state === "open" ? (b.forced ? "breaker open (by an operator)" : "breaker open") : "breaker half-open"))
    : null;

  pages.overview = () => every(5000, async () => {
    const [workflows, audit] = await Promise.all([api("/workflows"), api("/audit?limit=15")]);
    show(root, h("h1", {}, "Kafka workflows"),
      h("p", {class: "muted"}, "Every workflow's workers, lag, blocked partitions, dead letters and requests. Updates every 5 s."),
      table({id: "kw-workflows"}, ["Workflow", thNum("Workers up"), "Groups", thNum("Lag"), thNum("Blocked"), thNum("Dead letters"), "Requests"],
        rows(workflows, (w) => {
          const requests = Object.entries(w.requests && typeof w.requests === "object" ? w.requests : {});
          return h("tr", {"data-workflow": text(w.workflow)},
            h("td", {}, h("a", {href: url.workflow(w.workflow)}, text(w.workflow)), h("div", {class: "muted"}, text(w.description))),
            tdNum(w.workers_up),
            h("td", {}, list(w.units).map((u) => h("div", {}, h("a", {href: url.group(w.workflow, u.group)}, text(u.group)), " ",
              badge(u.up ? "up" : "down"), u.blocked ? [" ", badge("blocked")] : null, u.paused ? [" ", badge("paused")] : null,
              u.breaker ? [" ", breakerBadge(u.breaker)] : null))),
            tdNum(w.lag),
            h("td", {class: "num"}, w.blocked ? badge(`${num(w.blocked)} blocked`) : "0"),
            h("td", {class: "num"}, h("a", {href: url.letters(w.workflow)}, num(w.dead_letters))),
            h("td", {}, requests.length ? requests.map(([s, n], i) => [i ? " " : null, badge(s), " ", num(n)]) : h("span", {class: "muted"}, "–")));
        }, 7)),
      h("h2", {}, "Recent operations"), auditTable(audit));
  });

  pages.workflow = () => every(5000, async () => {
    let w;
    try { w = await api(`/workflows/${enc(ctx.dag_id)}`); } catch (e) {
      if (e.status === 404) { show(root, h("div", {class: "notice"}, `${text(ctx.dag_id)} is not a Kafka workflow (no spec in dags/workflows/ names it).`)); return "stop"; }
      throw e;
    }
    const stores = Object.entries(w.stores && typeof w.stores === "object" ? w.stores : {});
    show(root, crumbs(text(w.workflow)), h("h1", {}, text(w.workflow)), h("p", {class: "muted"}, text(w.description)),
      h("div", {class: "cards"}, card("Workers up", num(w.workers_up)), card("Lag", num(w.lag)), card("Blocked partitions", num(w.blocked)),
        card("Dead letters", h("a", {href: url.letters(w.workflow)}, num(w.dead_letters)))),
      h("h2", {}, "Workers, processors and stores"),
      table({id: "kw-units"}, ["Kind", "Name", "Group", thNum("Members"), "Health", "Group state", thNum("Lag"), thNum("Blocked"), thNum("Dead letters")],
        rows(w.units, (u) => h("tr", {}, h("td", {}, text(u.kind)), h("td", {}, text(u.name)),
          h("td", {}, h("a", {href: url.group(w.workflow, u.group)}, text(u.group))), tdNum(u.members),
          h("td", {}, badge(u.up ? "up" : "down"), u.paused ? [" ", badge("paused")] : null, u.breaker ? [" ", breakerBadge(u.breaker)] : null),
          h("td", {}, text(u.state)),
          tdNum(u.lag), tdNum(u.blocked),
          h("td", {class: "num"}, h("a", {href: url.letters(w.workflow, "group=" + enc(u.group))}, num(u.dead_letters)))), 9)),
      stores.map(([store, page]) => [h("h2", {}, `Recent requests of store ${store}`), list(page && page.items).length
        ? table({}, ["Request", "Status", "Progress", thNum("Completed"), thNum("Failed"), thNum("Total"), "Updated"], rows(page.items, (r) => h("tr", {},
          h("td", {}, r.run_id ? h("a", {target: "_top", href: url.runTab(w.workflow, r.run_id)}, text(r.request_id)) : text(r.request_id)),
          h("td", {}, badge(r.status)), h("td", {}, bar({total: r.total, completed: r.completed, failed: r.failed}, true)),
          tdNum(r.completed), tdNum(r.failed), tdNum(r.total), h("td", {}, iso(r.updated_at))), 7))
        : h("p", {class: "muted"}, "No requests yet.")]),
      h("h2", {}, "Operations"), auditTable(w.audit));
  });

  const title = (op) => op[0].toUpperCase() + op.slice(1);
  const explain = {
    skip: "The held message goes to the dead-letter topic, marked skipped, and the partition flows again.",
    unblock: "The held message is retried now.",
    pause: "Every worker of the group stops consuming until resumed.",
    resume: "The group's workers consume again.",
    open: "Every worker of the group stops handing messages to the handler; nothing is retried or dead-lettered until you close it (no probes).",
    close: "The held messages are retried now and the group's partitions resume.",
  };
  async function act(op, body, what) {
    const reason = await confirmWithReason(`${title(op)} ${what}?`, explain[op] || "", title(op));
    if (reason === null) return;
    try {
      const r = await post(`/workflows/${enc(ctx.dag_id)}/groups/${enc(ctx.group)}/${op}`, {...body, reason});
      setNotice("ok", `${op} by ${text(r.command && r.command.by)}: ${list(r.answers).map((a) => text(a && a.result)).join("; ")}`);
    } catch (e) {
      setNotice("error", `${op} failed: ${e.message}`);
    }
    await renderGroup();
  }

  async function renderGroup() {
    const g = await api(`/workflows/${enc(ctx.dag_id)}/groups/${enc(ctx.group)}`);
    const partitions = list(g.partitions), workers = list(g.workers);
    show(root, crumbs(h("a", {href: url.workflow(ctx.dag_id)}, text(ctx.dag_id)), text(g.group)),
      h("h1", {}, text(g.group), " ", h("span", {class: "muted"}, `(${text(g.kind)} ${text(g.name)})`)),
      h("div", {class: "cards"}, card("Workers", num(workers.length)), card("Group state", text(g.state)), card("Lag", num(g.lag)),
        h("div", {class: "card", id: "kw-trend"}, `Lag trend (${list(g.lag_history).length} samples)`, h("br"), sparkline(g.lag_history)),
        card("Dead letters", h("a", {href: url.letters(ctx.dag_id, "group=" + enc(g.group))}, num(g.dead_letters)))),
      h("div", {class: "toolbar"}, h("button", {id: "kw-pause", onclick: () => act("pause", {}, `group ${text(g.group)}`)}, "Pause group…"),
        h("button", {id: "kw-resume", onclick: () => act("resume", {}, `group ${text(g.group)}`)}, "Resume group…"),
        h("button", {id: "kw-breaker-open", onclick: () => act("open", {}, `the circuit breaker of ${text(g.group)}`)}, "Open breaker…"),
        h("button", {id: "kw-breaker-close", onclick: () => act("close", {}, `the circuit breaker of ${text(g.group)}`)}, "Close breaker…")),
      g.breaker && typeof g.breaker === "object" ? h("p", {id: "kw-breaker", "data-breaker": text(g.breaker.state)}, "Circuit breaker: ",
        badge(text(g.breaker.state)), g.breaker.forced ? " (opened by an operator, until closed)" : null,
        g.breaker.probe_in != null ? ` — probe in ${num(g.breaker.probe_in)} s` : null, " ", h("span", {class: "muted"}, text(g.breaker.reason))) : null,
      noticeNode(),
      h("h2", {}, "Partitions"),
      table({id: "kw-partitions"}, ["Partition", "Worker", thNum("Committed"), thNum("End"), thNum("Lag"), "State", "Holding message", ""], rows(partitions, (p) => {
        const tp = `${text(p.topic)}[${text(p.partition)}]`, hold = p.hold && typeof p.hold === "object" ? p.hold : null;
        const at = hold ? `${tp}@${text(hold.offset)}` : "";
        const holding = {topic: p.topic, partition: p.partition, offset: hold ? Number(hold.offset) : null};
        return h("tr", {"data-tp": tp, "data-state": text(p.state)}, h("td", {}, h("code", {}, tp)), h("td", {}, text(p.worker || "–")),
          tdNum(p.committed), tdNum(p.end), tdNum(p.lag), h("td", {}, badge(p.state)),
          h("td", {}, hold ? ["offset ", h("b", {}, text(hold.offset)), ", key ", h("code", {}, text(hold.key)), `, ${text(hold.failures)} failure(s), since `,
            when(hold.since), h("br"), h("span", {class: "muted"}, text(hold.error))] : null),
          h("td", {}, hold ? h("div", {class: "row-actions"},
            h("button", {class: "danger", "data-op": "skip", "data-offset": text(hold.offset), onclick: () => act("skip", holding, at)}, "Skip…"),
            h("button", {"data-op": "unblock", "data-offset": text(hold.offset), onclick: () => act("unblock", holding, at)}, "Unblock…")) : null));
      }, 8)),
      h("h2", {}, "Workers"),
      table({}, ["Worker", "Partitions", thNum("Handled"), thNum("Retried"), thNum("Dead-lettered"), "Reported"], rows(workers, (w) => h("tr", {},
        h("td", {}, text(w.worker), " ", w.paused ? badge("paused") : null, w.breaker ? [" ", breakerBadge(w.breaker)] : null),
        h("td", {}, list(w.assigned).map(text).join(", ")),
        tdNum(w.handled), tdNum(w.retried), tdNum(w.dead_lettered), h("td", {}, when(w.at))), 6, "No live worker.")),
      h("h2", {}, "Operations"), auditTable(g.audit));
  }
  pages.group = () => every(2000, renderGroup);

  pages["dead-letters"] = async () => {
    const w = await api(`/workflows/${enc(ctx.dag_id)}`);
    const params = new URLSearchParams(location.search);
    const state = {offset: 0, limit: 25, selected: new Set(), detail: null, dry: null};
    const groups = [...new Set(list(w.units).map((u) => text(u.group)))];
    const input = (name, size, type) => h("input", {name, size, type});
    const apply = h("button", {class: "primary", id: "kw-apply"}, "Filter");
    const clear = h("button", {type: "button", id: "kw-clear"}, "Clear");
    const form = h("form", {class: "filters", id: "kw-filter"},
      h("label", {}, "Group", h("select", {name: "group"}, h("option", {value: ""}, "all"), groups.map((g) => h("option", {}, g)))),
      h("label", {}, "Topic", input("topic", 16)), h("label", {}, "Key", input("key", 12)), h("label", {}, "Error type", input("error_type", 14)),
      h("label", {}, "Since", input("since", null, "datetime-local")), h("label", {}, "Until", input("until", null, "datetime-local")),
      h("input", {type: "hidden", name: "fingerprint"}), apply, clear);
    const out = h("div", {id: "kw-out"});
    show(root, crumbs(h("a", {href: url.workflow(ctx.dag_id)}, text(ctx.dag_id)), "dead letters"), h("h1", {}, `Dead letters of ${text(ctx.dag_id)}`), form, out);
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
    const selection = () => (state.selected.size ? {ids: [...state.selected]} : {filter: filterBody()});
    let latest = 0;  // a slower, older answer never overwrites a newer one

    async function openLetter(id) {
      try {
        const d = await api(`/workflows/${enc(ctx.dag_id)}/dead-letters/${enc(id)}`);
        const headers = Object.entries(d.headers && typeof d.headers === "object" ? d.headers : {});
        state.detail = [h("h2", {}, `Letter ${text(d.id)}`), h("table", {}, headers.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, h("code", {}, text(v)))))),
          h("p", {class: "muted"}, `Value: ${num(d.value_size)} bytes${d.value_truncated ? " (preview cut)" : ""}`),
          ...(d.schema && typeof d.schema === "object"
            ? [h("p", {class: "muted"}, `Decoded with subject ${text(d.schema.subject)}, version ${text(d.schema.version ?? "?")} (schema id ${text(d.schema.id)}, ${text(d.schema.format)})`),
               h("pre", {}, text(JSON.stringify(d.value_decoded, null, 2)))]
            : [h("pre", {}, text(d.value_preview))])];
      } catch (e) { state.detail = error(e.message); }
      load();
    }
    async function dryRun() {
      try {
        const r = await post(`/workflows/${enc(ctx.dag_id)}/dead-letters/replay`, {...selection(), dry_run: true});
        const moves = list(r.moves);
        state.dry = h("div", {class: "notice", id: "kw-dry-result"}, `Dry run: ${num(r.count)} letter(s) would move.`,
          moves.slice(0, 20).map((m) => [h("br"), h("code", {}, text(m.id)), " → ", h("code", {}, text(m.to))]), Number(r.count) > 20 ? [h("br"), "…"] : null);
      } catch (e) { state.dry = error(e.message); }
      load();
    }
    async function replay(total) {
      const reason = await confirmWithReason("Replay dead letters?", state.selected.size ? `${state.selected.size} selected letter(s) go back to their topic and are handled again.` : `Every letter matching the filter (${num(total)}) goes back to its topic.`, "Replay");
      if (reason === null) return;
      try {
        const r = await post(`/workflows/${enc(ctx.dag_id)}/dead-letters/replay`, {...selection(), dry_run: false, reason});
        setNotice("ok", `Replayed ${num(r.count)} letter(s) to ${[...new Set(list(r.moves).map((m) => text(m.to)))].join(", ")}.`);
        state.selected.clear();
        state.dry = null;
      } catch (e) { setNotice("error", `replay failed: ${e.message}`); }
      load();
    }
    // Canary replay (ops/canary.py): the group chosen in the filter, its key / error type filters too.
    const rateInput = h("input", {id: "kw-canary-rate", type: "number", min: "0.1", step: "any", value: "5", size: 4});
    const sizeInput = h("input", {id: "kw-canary-size", type: "number", min: "1", value: "5", size: 4});
    async function canaryReplay() {
      const group = form.elements.group.value;
      if (!group) { setNotice("error", "Choose a group in the filter first: a canary replay acts on one group's dead letters."); load(); return; }
      const rate = Number(rateInput.value), size = Number(sizeInput.value);
      const reason = await confirmWithReason(`Canary replay of ${text(group)}'s dead letters?`,
        `First ${num(size)} letter(s); then, while none comes back to the dead-letter topic, the rest at ${num(rate)} a second. It stops on its own when failures return.`, "Start");
      if (reason === null) return;
      try {
        await post(`/workflows/${enc(ctx.dag_id)}/canary-replays`, {group, key: form.elements.key.value || null,
          error_type: form.elements.error_type.value || null, rate, canary: size, reason});
        setNotice("ok", "Canary replay started: its progress is below.");
      } catch (e) { setNotice("error", `canary replay failed: ${e.message}`); }
      load();
    }
    const canaryTable = (items) => list(items).length ? [h("h2", {}, "Canary replays"),
      table({id: "kw-canaries"}, ["Started", "Group", "State", thNum("Sent"), thNum("Succeeded"), thNum("Failed"), "By", "Stop reason"], rows(items, (c) =>
        h("tr", {"data-state": text(c.state)}, h("td", {}, when(c.started_at)), h("td", {}, text(c.group)), h("td", {}, badge(text(c.state))),
          h("td", {class: "num"}, `${num(c.sent)} / ${num(c.total)}`), tdNum(c.succeeded), tdNum(c.failed), h("td", {}, text(c.by)),
          h("td", {class: "kw-canary-reason"}, text(c.reason))), 8))] : null;

    async function load() {
      const q = query(), mine = ++latest;
      let fps, page, canaries;
      try {
        [fps, page, canaries] = await Promise.all([api(`/workflows/${enc(ctx.dag_id)}/dead-letters/fingerprints?${q}`),
          api(`/workflows/${enc(ctx.dag_id)}/dead-letters?${q}&offset=${state.offset}&limit=${state.limit}`),
          api(`/workflows/${enc(ctx.dag_id)}/canary-replays`)]);
      } catch (e) {
        if (mine === latest) show(out, error(e.message));
        return;
      }
      if (mine !== latest) return;
      if (list(canaries).some((c) => ["starting", "canary", "running"].includes(c.state)) && !state.polling) {
        state.polling = true;  // a canary replay runs: follow its progress
        setTimeout(() => { state.polling = false; load(); }, 2000);
      }
      const sel = state.selected.size, total = finite(page.total) ? Number(page.total) : 0;
      const select = (id, on) => { on ? state.selected.add(id) : state.selected.delete(id); load(); };
      show(out, h("h2", {}, "By error fingerprint"),
        table({id: "kw-fingerprints"}, [thNum("Letters"), "Error type", "Normalised message", "Groups", ""], rows(fps, (f) => h("tr", {},
          tdNum(f.count), h("td", {}, text(f.error_type)), h("td", {}, h("code", {}, text(f.example))), h("td", {}, list(f.groups).map(text).join(", ")),
          h("td", {}, h("a", {href: "#", "data-fp": text(f.fingerprint), onclick: (ev) => { ev.preventDefault(); form.elements.fingerprint.value = text(f.fingerprint); state.offset = 0; load(); }}, "show only these"))), 5, "None.")),
        h("h2", {}, "Letters ", h("span", {class: "muted", id: "kw-total"}, `${num(total)} matching`)),
        h("div", {class: "toolbar"}, h("button", {id: "kw-dry", onclick: dryRun}, "Dry run"), h("button", {class: "primary", id: "kw-replay", onclick: () => replay(total)}, "Replay…"),
          h("button", {id: "kw-canary", onclick: canaryReplay}, "Canary replay…"), h("label", {}, "at ", rateInput, "/s, first "), sizeInput,
          h("span", {class: "muted"}, sel ? `${sel} selected` : "no selection: acts on every matching letter"), h("span", {class: "spacer"}),
          h("button", {id: "kw-prev", disabled: !state.offset, onclick: () => { state.offset = Math.max(0, state.offset - state.limit); load(); }}, "‹ Newer"),
          h("span", {class: "muted"}, `${total ? state.offset + 1 : 0}–${Math.min(state.offset + state.limit, total)} of ${num(total)}`),
          h("button", {id: "kw-next", disabled: state.offset + state.limit >= total, onclick: () => { state.offset += state.limit; load(); }}, "Older ›")),
        noticeNode(), state.dry, canaryTable(canaries),
        table({id: "kw-letters"}, ["", "Dead-lettered", "Key", "Group", "From", "Error", "Notes"], rows(page.items, (l) => {
          const id = text(l.id), replayed = l.replayed && typeof l.replayed === "object" ? l.replayed : null;
          return h("tr", {"data-id": id},
            h("td", {}, h("input", {type: "checkbox", checked: state.selected.has(id), onchange: (ev) => select(id, ev.target.checked)})),
            h("td", {}, when(l.at)), h("td", {}, h("code", {}, text(l.key))), h("td", {}, text(l.group)), h("td", {}, h("code", {}, text(l.original))),
            h("td", {}, h("b", {}, text(l.error_type)), " ", text(l.error)),
            h("td", {}, l.skipped_by ? [badge("skipped"), ` by ${text(l.skipped_by)}: ${text(l.skip_reason)}`] : null,
              replayed ? [badge("replayed"), ` by ${text(replayed.by)} `, when(replayed.at), " "] : null, l.replayed_from ? badge("replay") : null, " ",
              traceRef(l.trace_id, l.trace_url), " ",
              h("a", {href: "#", "data-open": id, onclick: (ev) => { ev.preventDefault(); openLetter(id); }}, "open")));
        }, 7, "No dead letters match.")),
        h("div", {id: "kw-detail"}, state.detail));
    }
    form.onsubmit = (ev) => { ev.preventDefault(); state.offset = 0; state.selected.clear(); state.dry = null; notice = null; load(); };
    clear.onclick = () => { form.reset(); form.elements.fingerprint.value = ""; state.offset = 0; load(); };
    load();
  };

  pages.run = () => every(1000, async () => {
    let r;
    try { r = await api(`/workflows/${enc(ctx.dag_id)}/runs/${enc(ctx.run_id)}`); } catch (e) {
      if (e.status === 404) { show(root, h("div", {class: "notice"}, `No Kafka request to follow for this run: ${e.message.replace(/^404: /, "")}.`)); return "stop"; }
      throw e;
    }
    const requests = list(r.requests);
    show(root, crumbs(h("a", {href: url.workflow(ctx.dag_id)}, text(ctx.dag_id)), text(ctx.run_id)), requests.map((q) => {
      const p = q.progress && typeof q.progress === "object" ? q.progress : null, m = q.meta && typeof q.meta === "object" ? q.meta : {};
      if (!p) return [h("h1", {}, text(q.step)), h("p", {class: "muted", id: "kw-status", "data-status": "not registered"},
        "Request ", h("code", {}, text(q.request_id)), " is not registered yet (the split has not committed it). Waiting…")];
      const failedJobs = list(q.failed_jobs), bad = list(m.bad_examples);
      // A pipelined split commits jobs while it reads: until it seals the total the request is pending.
      const split = q.split && typeof q.split === "object" ? q.split : null, splitting = q.status === "pending" && split;
      return [h("h1", {}, "Import progress ", badge(q.status)),
        h("p", {class: "muted"}, "Request ", h("code", {}, text(q.request_id)), ` of store ${text(q.store)}${p.terminal ? "" : " · updates every second"}`,
          q.trace_id ? [" · ", traceRef(q.trace_id, q.trace_url)] : null),
        q.error ? h("div", {class: "notice error", id: "kw-error"}, text(q.error)) : null,
        splitting ? h("p", {id: "kw-splitting", "data-rows": finite(split.rows) ? Number(split.rows) : "", "data-jobs": finite(split.jobs) ? Number(split.jobs) : ""}, "Splitting: ", h("b", {}, num(split.rows)),
          " rows read, ", h("b", {}, num(split.jobs)), " jobs committed so far (being handled); the total is known once the whole source is read.") : null,
        h("div", {id: "kw-status", "data-status": text(q.status), "data-percent": finite(p.percent) ? p.percent : ""}, bar(p)),
        h("div", {class: "cards"}, card("Completed", num(p.completed)), card("Failed", num(p.failed)), card("Total jobs", splitting ? `${num(split.jobs)} so far` : num(p.total)),
          card("Rate", finite(p.rate) ? `${p.rate} jobs/s` : "–"), card(p.terminal ? "Took" : "ETA", secs(p.terminal ? p.elapsed : p.eta))),
        h("h2", {}, "Rows"), m.rows === undefined && split ? h("p", {}, `${num(split.rows)} rows read so far`)
          : h("p", {}, `${num(m.rows)} rows read, ${num(m.valid_rows)} valid, `, h("b", {}, num(m.bad_rows)), " bad",
          m.source ? [" · source ", h("code", {}, text(m.source))] : null),
        bad.length ? table({id: "kw-bad-rows"}, [thNum("Row"), thNum("Line"), "Column", "Reason"], rows(bad, (b) => h("tr", {},
          tdNum(b.row), tdNum(b.line), h("td", {}, text(b.column)), h("td", {}, text(b.reason))), 4)) : null,
        h("h2", {}, "Failed jobs"), failedJobs.length ? [table({}, [thNum("Job"), "Reason"], rows(failedJobs, (f) => h("tr", {}, tdNum(f.job), h("td", {}, text(f.reason))), 2)),
          q.failed_jobs_truncated ? h("p", {class: "muted"}, "More failed jobs than shown.") : null] : h("p", {class: "muted"}, "None.")];
    }));
    return requests.length && requests.every((q) => q.progress && q.progress.terminal) ? "stop" : undefined;
  });

  (pages[ctx.page] || (() => { root.textContent = "unknown page"; }))();
})();
