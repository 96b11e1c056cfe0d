// rankd live page: subscribes to one board's top 10 over /v1/ws and redraws on every frame.
// ?board=<name> (default "global"), ?token=<key> when the server requires API keys.
"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  const board = params.get("board") || "global";
  const token = params.get("token");
  const TOP = 10;
  const MIN_DELAY = 500, MAX_DELAY = 15000;
  const $ = (id) => document.getElementById(id);
  const rows = $("rows"), status = $("status"), meta = $("meta");

  $("board").textContent = board;
  document.title = board + " · rankd live";

  let delay = MIN_DELAY;
  let shown = null; // member -> "rank|score" of the last table drawn

  function setStatus(kind, text) {
    status.className = "status " + kind;
    status.textContent = text;
  }

  function connect() {
    const url = new URL("/v1/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    if (token) url.searchParams.set("token", token);
    setStatus("connecting", "connecting…");
    const ws = new WebSocket(url);
    ws.onopen = () => {
      ws.send(JSON.stringify({ op: "subscribe", id: "top", board, top: TOP }));
    };
    ws.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.type === "top") {
        delay = MIN_DELAY; // a working connection resets the backoff
        setStatus("live", "live");
        render(frame);
      } else if (frame.type === "error") {
        setStatus("error", frame.detail);
      }
    };
    ws.onclose = (event) => {
      if (event.code === 1008 && event.reason.startsWith("unauthorized")) {
        setStatus("error", "unauthorized: open this page with ?token=<key>");
        return; // retrying cannot help
      }
      // Full jitter, so a restarted server is not hit by every page at the same instant.
      const wait = Math.round(delay / 2 + Math.random() * delay / 2);
      delay = Math.min(delay * 2, MAX_DELAY);
      setStatus("offline", "offline, reconnecting in " + Math.ceil(wait / 1000) + " s");
      setTimeout(connect, wait);
    };
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function render(frame) {
    const next = new Map();
    const body = document.createDocumentFragment();
    for (const e of frame.entries) {
      const key = e.rank + "|" + e.score;
      const tr = document.createElement("tr");
      if (shown !== null && shown.get(e.member) !== key) tr.className = "changed";
      tr.append(cell(String(e.rank), "rank"), cell(e.member), cell(String(e.score), "score"));
      body.append(tr);
      next.set(e.member, key);
    }
    if (frame.entries.length === 0) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = cell("no scores yet");
      td.colSpan = 3;
      tr.append(td);
      body.append(tr);
    }
    rows.replaceChildren(body);
    shown = next;
    const n = frame.total;
    meta.textContent = n + (n === 1 ? " entry" : " entries") + " · seq " + frame.seq;
  }

  connect();
})();
