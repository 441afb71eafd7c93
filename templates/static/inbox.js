/* Dispatcher inbox: live refresh over Server-Sent Events and clock countdowns.
 * Fragments come from the server already rendered and escaped; nothing here builds markup from data. */
(function () {
  "use strict";
  var warnMinutes = parseInt(document.body.getAttribute("data-warn-minutes") || "5", 10);

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function span(ms) {
    var s = Math.floor(Math.abs(ms) / 1000);
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d > 0) { return d + " д " + h + " ч"; }
    if (h > 0) { return h + " ч " + pad(m) + " мин"; }
    return m + ":" + pad(s % 60);
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-due]").forEach(function (el) {
      var left = new Date(el.getAttribute("data-due")).getTime() - now;
      el.classList.remove("warning", "breached");
      if (left < 0) { el.textContent = "просрочено на " + span(left); el.classList.add("breached"); }
      else {
        el.textContent = "осталось " + span(left);
        if (left < warnMinutes * 60000) { el.classList.add("warning"); }
      }
    });
    document.querySelectorAll("[data-since]").forEach(function (el) {
      el.textContent = span(now - new Date(el.getAttribute("data-since")).getTime());
    });
  }
  tick();
  window.setInterval(tick, 1000);

  var live = document.querySelector("[data-live]");
  if (!live || !window.EventSource) { return; }
  var kind = live.getAttribute("data-live");
  var target = kind === "list" ? live : document.getElementById("live-thread");
  var src = live.getAttribute("data-src");
  var pending = null;

  function refresh() {
    if (kind === "request") { return; }
    fetch(src, { credentials: "same-origin", headers: { "Accept": "text/html-fragment" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null || !target) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = kind === "list" ? doc.body : (doc.querySelector("ol.thread") || doc.body);
        target.replaceChildren.apply(target, Array.prototype.slice.call(fresh.childNodes));
        tick();
      })
      .catch(function () { /* the next event retries */ });
  }
  function schedule() {
    if (pending) { return; }
    pending = window.setTimeout(function () { pending = null; refresh(); }, 150);
  }

  var events = new EventSource("/inbox/events");
  events.onmessage = function (e) {
    var event;
    try { event = JSON.parse(e.data); } catch (err) { return; }
    if (kind === "list") { schedule(); return; }
    var mine = live.getAttribute("data-conversation");
    if (kind === "conversation" && (event.conversation_id === mine || event.type === "delivery")) { schedule(); }
  };
}());
