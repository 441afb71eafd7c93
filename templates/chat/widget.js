/* adshub web chat widget. Embed on any page with:
 *   <script src="https://hub.example.ru/chat/widget.js" defer></script>
 * Add data-open="true" to open the chat at once.
 * Everything residents and dispatchers write is shown with textContent: never parsed as HTML.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var base = new URL(script ? script.src : "/chat/widget.js", window.location.href);
  var hubOrigin = base.origin;
  var SESSION_KEY = "adshub-chat-session";
  var PENDING_KEY = "adshub-chat-pending";

  function randomId(bytes) {
    var buf = new Uint8Array(bytes);
    window.crypto.getRandomValues(buf);
    return Array.prototype.map.call(buf, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  function load(key, fallback) {
    try { var v = window.localStorage.getItem(key); return v === null ? fallback : JSON.parse(v); }
    catch (e) { return fallback; }
  }
  function save(key, value) {
    try { window.localStorage.setItem(key, JSON.stringify(value)); } catch (e) { /* private mode */ }
  }

  var session = load(SESSION_KEY, null);
  var fresh = false;
  if (typeof session !== "string" || !/^[A-Za-z0-9_-]{8,64}$/.test(session)) {
    session = randomId(16);
    save(SESSION_KEY, session);
    fresh = true;
  }
  var pending = load(PENDING_KEY, []);
  if (!Array.isArray(pending)) { pending = []; }

  var host = document.createElement("div");
  host.setAttribute("data-adshub-chat", "");
  var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
  var css = document.createElement("link");
  css.rel = "stylesheet";
  css.href = hubOrigin + "/static/widget.css";
  root.appendChild(css);

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  var launcher = el("button", "launcher adshub-launcher", "Написать в АДС");
  var panel = el("section", "panel adshub-panel");
  panel.hidden = true;
  panel.setAttribute("aria-label", "Чат аварийно-диспетчерской службы");
  var head = el("div", "head");
  head.appendChild(el("span", null, "Аварийно-диспетчерская служба"));
  var close = el("button", "close", "×");
  close.setAttribute("aria-label", "Свернуть чат");
  head.appendChild(close);
  var status = el("div", "status adshub-status", "Подключение…");
  var log = el("div", "log adshub-log");
  log.setAttribute("role", "log");
  log.setAttribute("aria-live", "polite");
  var compose = el("form", "compose");
  var input = el("textarea", "adshub-input");
  input.placeholder = "Опишите проблему и адрес…";
  input.setAttribute("aria-label", "Сообщение");
  var MAX_CHARS = 20000;
  var send = el("button", "adshub-send", "Отправить");
  send.type = "submit";
  var counter = el("span", "counter adshub-counter", "");
  counter.setAttribute("aria-live", "polite");
  compose.appendChild(input);
  compose.appendChild(send);
  panel.appendChild(head);
  panel.appendChild(status);
  panel.appendChild(log);
  panel.appendChild(compose);
  panel.appendChild(counter);
  root.appendChild(launcher);
  root.appendChild(panel);

  var shown = {};
  var socket = null;
  var retry = 1000;

  function open() { panel.hidden = false; launcher.hidden = true; input.focus(); }
  launcher.addEventListener("click", open);
  close.addEventListener("click", function () { panel.hidden = true; launcher.hidden = false; });

  function formatDeadline(iso, text) {
    if (text) { return text; }
    if (!iso) { return ""; }
    var d = new Date(iso);
    if (isNaN(d.getTime())) { return ""; }
    return d.toLocaleString("ru-RU", { day: "2-digit", month: "2-digit", year: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  function render(message, extraClass) {
    var key = (message.from || "") + ":" + message.id;
    var existing = shown[key];
    if (existing) {
      existing.classList.remove("pending");
      return existing;
    }
    var who = message.from || "hub";
    var node = el("div", "msg adshub-msg " + who + (extraClass ? " " + extraClass : ""));
    node.setAttribute("data-id", message.id || "");
    if (who === "dispatcher") { node.appendChild(el("span", "author", "Диспетчер")); }
    node.appendChild(el("span", "text", message.text));
    if (message.request && message.request.number) {
      var info = "Заявка № " + message.request.number;
      if (message.request.deadline) { info += " · срок до " + formatDeadline(message.request.deadline, message.request.deadline_text); }
      var badge = el("span", "request adshub-request", info);
      badge.setAttribute("data-number", message.request.number);
      node.appendChild(badge);
    }
    if (Array.isArray(message.files)) {
      message.files.forEach(function (f) {
        if (!f || typeof f.url !== "string" || f.url.indexOf("/chat/files/") !== 0) { return; }
        var link = el("a", "file adshub-file", "📎 " + (f.name || "файл"));
        link.href = new URL(f.url, base).href;
        link.setAttribute("download", f.name || "file");
        node.appendChild(link);
      });
    }
    if (Array.isArray(message.buttons)) {
      var row = el("div", "buttons");
      message.buttons.forEach(function (line) {
        (line || []).forEach(function (b) {
          var btn = el("button", null, b.text);
          btn.type = "button";
          btn.addEventListener("click", function () {
            transmit({ type: "button", id: "b" + randomId(8), data: b.data });
          });
          row.appendChild(btn);
        });
      });
      node.appendChild(row);
    }
    if (message.id) { shown[key] = node; }
    log.appendChild(node);
    log.scrollTop = log.scrollHeight;
    return node;
  }

  function notice(text) {
    var node = el("div", "msg notice adshub-notice", text);
    log.appendChild(node);
    log.scrollTop = log.scrollHeight;
  }

  function transmit(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function flushPending() {
    pending.forEach(function (p) { transmit({ type: "message", id: p.id, text: p.text }); });
  }

  function dropPending(id) {
    pending = pending.filter(function (p) { return p.id !== id; });
    save(PENDING_KEY, pending);
  }

  function count() {
    var n = input.value.length;
    counter.textContent = n > MAX_CHARS
      ? "Слишком длинное сообщение: " + n.toLocaleString("ru-RU") + " знаков, можно до " + MAX_CHARS.toLocaleString("ru-RU") + ". Сократите его или отправьте частями."
      : (n > MAX_CHARS * 0.8 ? n.toLocaleString("ru-RU") + " из " + MAX_CHARS.toLocaleString("ru-RU") : "");
    counter.classList.toggle("over", n > MAX_CHARS);
  }
  input.addEventListener("input", count);

  function submit() {
    var text = input.value.trim();
    if (!text) { return; }
    if (text.length > MAX_CHARS) { count(); return; }
    var id = "m" + Date.now().toString(36) + randomId(4);
    pending.push({ id: id, text: text });
    save(PENDING_KEY, pending);
    render({ id: id, from: "resident", text: text }, "pending");
    input.value = "";
    count();
    transmit({ type: "message", id: id, text: text });
  }

  compose.addEventListener("submit", function (e) { e.preventDefault(); submit(); });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); submit(); }
  });

  function onFrame(frame) {
    if (!frame || typeof frame !== "object") { return; }
    if (frame.type === "history" && Array.isArray(frame.messages)) {
      frame.messages.forEach(function (m) { render(m); });
      var known = {};
      frame.messages.forEach(function (m) { if (m.from === "resident") { known[m.id] = true; } });
      pending.filter(function (p) { return known[p.id]; }).forEach(function (p) { dropPending(p.id); });
      pending.forEach(function (p) { render({ id: p.id, from: "resident", text: p.text }, "pending"); });
      flushPending();
    } else if (frame.type === "ack") {
      dropPending(frame.id);
      var mine = shown["resident:" + frame.id];
      if (mine) { mine.classList.remove("pending"); }
    } else if (frame.type === "message") {
      render(frame);
    } else if (frame.type === "error") {
      if (frame.code !== "unavailable" && frame.code !== "rate_limited" && frame.id) { dropPending(frame.id); }
      notice(frame.message || "Ошибка");
    }
  }

  function connect() {
    var scheme = base.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + base.host + "/chat/ws?session=" + encodeURIComponent(session) + (fresh ? "&fresh=1" : "");
    fresh = false;
    socket = new WebSocket(url);
    socket.addEventListener("open", function () { status.textContent = "На связи круглосуточно"; retry = 1000; });
    socket.addEventListener("message", function (e) {
      var frame;
      try { frame = JSON.parse(e.data); } catch (err) { return; }
      onFrame(frame);
    });
    socket.addEventListener("close", function () {
      status.textContent = "Нет связи, переподключение…";
      window.setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    });
  }

  function mount() {
    document.body.appendChild(host);
    if (script && script.getAttribute("data-open") === "true") { open(); }
    connect();
  }
  if (document.body) { mount(); } else { document.addEventListener("DOMContentLoaded", mount); }
  window.adshubChat = { session: session, open: open };
}());
