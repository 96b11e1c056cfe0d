// rankd live page: one board's top N and, on request, the entries around one member, live
// over /v1/ws. URL: ?board=<name> (default "global"), ?top=<1-100> (default 10),
// ?member=<id> (the "find me" box), ?token=<key> when the server requires API keys.
"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  const TOP = Math.min(100, Math.max(1, parseInt(params.get("top") || "10", 10) || 10));
  const RADIUS = 3;
  const MIN_DELAY = 500, MAX_DELAY = 15000;
  const $ = (id) => document.getElementById(id);
  const els = {
    board: $("board"), status: $("status"), meta: $("meta"), notice: $("notice"),
    rows: $("rows"), aroundBox: $("around-box"), aroundRows: $("around-rows"),
    aroundTitle: $("around-title"), picker: $("picker"), pickerBox: $("picker-box"),
    find: $("find"), me: $("me"),
  };

  let board = params.get("board") || "global";
  let member = params.get("member") || "";
  let ws = null;
  let delay = MIN_DELAY;
  let everLive = false;
  let restarting = false; // the server said it is going away: say so until it is back
  let missing = false; // the board does not exist (HTTP 404)
  const shown = { top: null, me: null }; // subscription id -> Map member -> "score|metadata"
  const active = new Set(); // subscription ids live on the current socket

  // -- exact numbers ---------------------------------------------------------------------------
  // Scores are int64 on the wire; a JS number holds integers exactly only up to 2^53. Scores
  // are therefore kept as their JSON source text: JSON.parse's reviver gets it as
  // context.source where the browser supports that (Chromium 114+, Firefox 135+); elsewhere
  // the "score" values are quoted before parsing (a real key: a quote inside a JSON string is
  // always escaped, so the pattern cannot match inside member ids or metadata).
  const hasSource = (() => {
    let ok = false;
    JSON.parse("1", (k, v, ctx) => { ok = !!ctx && ctx.source === "1"; return v; });
    return ok;
  })();

  function parseFrame(text) {
    if (hasSource) {
      return JSON.parse(text, (key, value, ctx) =>
        key === "score" && typeof value === "number" ? ctx.source : value);
    }
    return JSON.parse(text.replace(/"score":(-?[0-9][0-9.eE+-]*)/g, '"score":"$1"'));
  }

  const parts = new Intl.NumberFormat().formatToParts(1234567.5);
  const GROUP = (parts.find((p) => p.type === "group") || { value: "," }).value;
  const DECIMAL = (parts.find((p) => p.type === "decimal") || { value: "." }).value;

  // "1234567.25" -> "1,234,567.25" with the reader's separators, digit for digit.
  function formatNumber(source) {
    const m = /^(-?)([0-9]+)(?:\.([0-9]+))?$/.exec(String(source));
    if (!m) return String(source); // an exponent form: shown as sent
    const whole = m[2].replace(/\B(?=(\d{3})+(?!\d))/g, GROUP);
    return m[1] + whole + (m[3] ? DECIMAL + m[3] : "");
  }

  // -- status ----------------------------------------------------------------------------------
  function setStatus(kind, text) {
    els.status.className = "status " + kind;
    els.status.textContent = text;
  }

  function notice(text) {
    els.notice.hidden = !text;
    els.notice.textContent = text || "";
  }

  // -- HTTP reads (board list, does the board exist) -----------------------------------------
  function get(path) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    return fetch(path, { headers, cache: "no-store" });
  }

  async function loadBoards() {
    let names = [];
    try {
      const r = await get("/v1/boards?limit=100");
      if (r.ok) names = (await r.json()).boards.map((b) => b.board);
    } catch (e) { /* offline: the picker stays hidden */ }
    if (names.length === 0) return; // no list for this credential: the URL names the board
    if (!names.includes(board)) names.unshift(board);
    els.picker.replaceChildren(...names.map((n) => new Option(n, n, false, n === board)));
    els.pickerBox.hidden = false;
  }

  async function checkExists() {
    const asked = board;
    try {
      const r = await get("/v1/boards/" + encodeURIComponent(asked));
      if (asked !== board) return;
      missing = r.status === 404;
    } catch (e) { return; }
    if (missing) {
      notice("There is no board named \u201c" + board + "\u201d. Check the name" +
        (els.pickerBox.hidden ? "." : ", or pick a board above."));
      emptyRow(els.rows, "no such board");
    }
  }

  // -- the socket ------------------------------------------------------------------------------
  function send(msg) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  }

  function subscribe(msg) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      send(msg);
      active.add(msg.id);
    }
  }

  function unsubscribe(id) {
    if (active.delete(id)) send({ op: "unsubscribe", id });
  }

  function subscribeAll() {
    active.clear();
    subscribe({ op: "subscribe", id: "top", board, top: TOP });
    if (member) subscribe({ op: "subscribe", id: "me", board, member, radius: RADIUS });
  }

  function unauthorized() {
    setStatus("error", token
      ? "unauthorized: the key in ?token= was refused"
      : "unauthorized: this board needs a key (open the page with ?token=<key>)");
  }

  function connect() {
    const url = new URL("/v1/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    if (token) url.searchParams.set("token", token);
    if (!restarting) setStatus("connecting", "connecting\u2026");
    const socket = ws = new WebSocket(url);
    socket.onopen = subscribeAll;
    socket.onmessage = (event) => {
      const frame = parseFrame(event.data);
      if (frame.board !== undefined && frame.board !== board) return; // from a board we left
      if (frame.type === "top" && frame.id === "top") {
        delay = MIN_DELAY; // a working connection resets the backoff
        everLive = true;
        restarting = false;
        setStatus("live", "live");
        renderTop(frame);
      } else if (frame.type === "around" && frame.id === "me") {
        renderAround(frame);
      } else if (frame.type === "error") {
        if (frame.id !== null) active.delete(frame.id); // a refused subscribe never started
        if (frame.status === 401) unauthorized(); // no key: the board is not public_read
        else notice(frame.detail);
      }
    };
    socket.onclose = (event) => {
      if (socket !== ws) return;
      const reason = event.reason || "";
      if (event.code === 1008 && reason.startsWith("unauthorized")) {
        unauthorized();
        return; // retrying cannot help
      }
      if (event.code === 1001 || event.code === 1012) restarting = true;
      // Full jitter, so a restarted server is not hit by every page at the same instant.
      const wait = Math.round(delay / 2 + Math.random() * delay / 2);
      delay = Math.min(delay * 2, MAX_DELAY);
      const again = " \u2014 reconnecting in " + Math.ceil(wait / 1000) + " s";
      let why = "cannot reach the server";
      if (restarting) why = "server restarting";
      else if (event.code === 1013) why = "server busy (" + reason + ")";
      else if (everLive) why = "connection lost";
      setStatus("offline", "offline: " + why + again);
      setTimeout(connect, wait);
    };
  }

  // -- rendering -------------------------------------------------------------------------------
  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function emptyRow(body, text) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = cell(text);
    td.colSpan = 3;
    tr.append(td);
    body.replaceChildren(tr);
  }

  function metaText(metadata) {
    if (!metadata) return "";
    return Object.entries(metadata)
      .map(([k, v]) => k + ": " + (typeof v === "object" ? JSON.stringify(v) : String(v)))
      .join(" \u00b7 ");
  }

  // Rows for entries; a row is marked "changed" only when that member is new to the view or
  // its score or metadata changed -- not when others moved it a place.
  function fill(body, id, entries) {
    const before = shown[id];
    const after = new Map();
    const rows = document.createDocumentFragment();
    for (const e of entries) {
      const key = e.score + "|" + JSON.stringify(e.metadata || null);
      const tr = document.createElement("tr");
      tr.dataset.member = e.member;
      if (before !== null && before.get(e.member) !== key) tr.classList.add("changed");
      if (member && e.member === member) tr.classList.add("me");
      const who = cell(e.member, "member");
      const extra = metaText(e.metadata);
      if (extra) {
        const small = document.createElement("small");
        small.textContent = extra;
        who.append(small);
      }
      tr.append(cell(formatNumber(e.rank), "rank"), who, cell(formatNumber(e.score), "score"));
      rows.append(tr);
      after.set(e.member, key);
    }
    body.replaceChildren(rows);
    shown[id] = after;
  }

  function renderTop(frame) {
    if (frame.entries.length === 0) {
      shown.top = new Map();
      if (missing) emptyRow(els.rows, "no such board");
      else emptyRow(els.rows, "no scores yet");
      checkExists();
    } else {
      if (missing) { missing = false; notice(""); }
      fill(els.rows, "top", frame.entries);
    }
    const n = frame.total;
    els.meta.textContent = formatNumber(n) + (n === 1 ? " entry" : " entries") +
      " \u00b7 updated " + new Date().toLocaleTimeString();
  }

  function renderAround(frame) {
    els.aroundBox.hidden = false;
    if (frame.entries.length === 0) {
      shown.me = new Map();
      els.aroundTitle.textContent = "around " + frame.member;
      emptyRow(els.aroundRows, "\u201c" + frame.member + "\u201d is not on this board yet");
      return;
    }
    const mine = frame.entries.find((e) => e.member === frame.member);
    els.aroundTitle.textContent = "around " + frame.member + " (#" + formatNumber(mine.rank) + ")";
    fill(els.aroundRows, "me", frame.entries);
  }

  // -- controls --------------------------------------------------------------------------------
  function setParam(name, value) {
    const p = new URLSearchParams(location.search);
    if (value) p.set(name, value); else p.delete(name);
    history.replaceState(null, "", "?" + p.toString());
  }

  function showBoard() {
    els.board.textContent = board;
    document.title = board + " \u00b7 rankd live";
  }

  function highlightMe() {
    for (const tr of els.rows.querySelectorAll("tr[data-member]")) {
      tr.classList.toggle("me", !!member && tr.dataset.member === member);
    }
  }

  els.picker.addEventListener("change", () => {
    if (els.picker.value === board) return;
    unsubscribe("top");
    unsubscribe("me");
    board = els.picker.value;
    setParam("board", board);
    showBoard();
    missing = false;
    notice("");
    shown.top = shown.me = null;
    emptyRow(els.rows, "loading\u2026");
    els.aroundRows.replaceChildren();
    subscribeAll();
  });

  els.find.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = els.me.value.trim();
    if (next === member) return;
    unsubscribe("me");
    member = next;
    shown.me = null;
    setParam("member", member);
    highlightMe();
    notice("");
    if (member) {
      subscribe({ op: "subscribe", id: "me", board, member, radius: RADIUS });
    } else {
      els.aroundBox.hidden = true;
      els.aroundRows.replaceChildren();
    }
  });

  els.me.value = member;
  showBoard();
  loadBoards();
  connect();
})();
