/* Dispatcher inbox: clocks that count down, pages that stay live over Server-Sent Events, alerts (sound,
 * desktop notification, tab title, a banner) for a new emergency or a clock about to break, keyboard
 * shortcuts, canned replies. Fragments come from the server already rendered and escaped; nothing here
 * builds markup from data — text goes in through textContent. */
(function () {
  "use strict";
  var body = document.body;
  var warnMinutes = parseInt(body.getAttribute("data-warn-minutes") || "5", 10);
  var baseTitle = document.title;
  var state = { alerts: [], sounds: 0, notifications: 0 };
  window.adshubInbox = state;

  // -- clocks ---------------------------------------------------------------------------------
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function span(ms) {
    var s = Math.floor(Math.abs(ms) / 1000);
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d > 0) { return d + " д " + h + " ч"; }
    if (h > 0) { return h + " ч " + pad(m) + " мин"; }
    return m + ":" + pad(s % 60);
  }
  function remembered(key) {
    try {
      var seen = JSON.parse(sessionStorage.getItem("adshub-alerted") || "{}");
      if (seen[key]) { return true; }
      seen[key] = Date.now();
      sessionStorage.setItem("adshub-alerted", JSON.stringify(seen));
    } catch (err) { /* private mode: alert every time */ }
    return false;
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-due]").forEach(function (el) {
      var left = new Date(el.getAttribute("data-due")).getTime() - now;
      var row = el.closest(".row-item, li.clock, tr");
      el.classList.remove("warning", "breached");
      if (row) { row.classList.remove("clock-warning", "clock-breached"); }
      if (left < 0) {
        el.textContent = "просрочено на " + span(left);
        el.classList.add("breached");
        if (row) { row.classList.add("clock-breached"); }
      } else {
        el.textContent = "осталось " + span(left);
        if (left < warnMinutes * 60000) {
          el.classList.add("warning");
          if (row) { row.classList.add("clock-warning"); }
          var label = el.getAttribute("data-label");
          var key = el.getAttribute("data-due") + "|" + label;
          if (label && !remembered(key)) {
            var number = el.getAttribute("data-number");
            var item = el.closest(".row-item");
            var who = item ? (item.querySelector(".who") || {}).textContent : "";
            alarm("Истекает срок: " + label + (number ? ", заявка № " + number : "") + (who ? " — " + who : ""),
              item ? item.querySelector("a.open").getAttribute("href") : null);
          }
        }
      }
    });
    document.querySelectorAll("[data-since]").forEach(function (el) {
      el.textContent = span(now - new Date(el.getAttribute("data-since")).getTime());
    });
  }

  // -- alerts ----------------------------------------------------------------------------------
  var audio = null;
  var toggle = document.getElementById("alerts-toggle");
  function alertsOn() { return window.localStorage && localStorage.getItem("adshub-alerts") === "on"; }
  function showToggle() {
    if (!toggle) { return; }
    var granted = window.Notification && Notification.permission === "granted";
    toggle.textContent = alertsOn() ? (granted ? "Оповещения включены" : "Звук включён") : "Включить оповещения";
    toggle.classList.toggle("on", alertsOn());
  }
  if (toggle) {
    toggle.addEventListener("click", function () {
      if (alertsOn()) { localStorage.setItem("adshub-alerts", "off"); showToggle(); return; }
      localStorage.setItem("adshub-alerts", "on");
      unlockAudio();
      if (window.Notification && Notification.permission === "default") {
        Notification.requestPermission().then(showToggle, showToggle);
      }
      showToggle();
    });
    showToggle();
  }
  function unlockAudio() {
    var Ctx = window.AudioContext || window.webkitAudioContext;
    if (!audio && Ctx) { audio = new Ctx(); }
    if (audio && audio.state === "suspended") { audio.resume(); }
  }
  document.addEventListener("pointerdown", function () { if (alertsOn()) { unlockAudio(); } }, { once: true });
  function beep() {
    if (!alertsOn()) { return; }
    unlockAudio();
    if (!audio) { return; }
    [0, 0.35, 0.7].forEach(function (offset) {
      var osc = audio.createOscillator(), gain = audio.createGain();
      osc.type = "square"; osc.frequency.value = 880;
      gain.gain.value = 0.08;
      osc.connect(gain); gain.connect(audio.destination);
      osc.start(audio.currentTime + offset); osc.stop(audio.currentTime + offset + 0.2);
    });
    state.sounds += 1;
  }
  var flashing = null;
  function flashTitle(text) {
    if (flashing) { window.clearInterval(flashing); }
    var on = true;
    document.title = "⚠ " + text;
    flashing = window.setInterval(function () {
      document.title = on ? baseTitle : "⚠ " + text;
      on = !on;
    }, 1000);
    var stop = function () {
      if (document.visibilityState === "visible" && document.hasFocus()) {
        window.clearInterval(flashing); flashing = null; document.title = baseTitle;
        window.removeEventListener("focus", stop);
      }
    };
    window.addEventListener("focus", stop);
  }
  var banner = document.getElementById("live-alert");
  function alarm(text, href) {
    state.alerts.push(text);
    if (banner) {
      banner.replaceChildren();
      var strong = document.createElement("strong");
      strong.textContent = text;
      banner.appendChild(strong);
      if (href) {
        var link = document.createElement("a");
        link.href = href; link.textContent = "Открыть";
        banner.appendChild(link);
      }
      var close = document.createElement("button");
      close.type = "button"; close.textContent = "×"; close.setAttribute("aria-label", "Скрыть");
      close.addEventListener("click", function () { banner.hidden = true; });
      banner.appendChild(close);
      banner.hidden = false;
    }
    flashTitle(text);
    beep();
    if (window.Notification && Notification.permission === "granted") {
      try {
        var n = new Notification("АДС", { body: text, tag: text, requireInteraction: true });
        n.onclick = function () { window.focus(); if (href) { window.location.href = href; } };
        state.notifications += 1;
      } catch (err) { /* some browsers only notify from a service worker */ }
    }
  }

  // -- live pages -------------------------------------------------------------------------------
  var live = document.querySelector("[data-live]");
  var kind = live ? live.getAttribute("data-live") : null;
  var knownEmergencies = null;
  function emergencyIds(root) {
    var list = root.querySelector("ol.rows");
    if (!list) { return null; }
    return (list.getAttribute("data-emergency-ids") || "").split(" ").filter(Boolean);
  }
  function typing(region) {
    var active = document.activeElement;
    return region && active && region.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName);
  }
  function swap(id, doc) {
    var target = document.getElementById(id);
    var fresh = doc.getElementById(id);
    if (!target || !fresh || typing(target)) { return; }
    var open = Array.prototype.map.call(target.querySelectorAll("details[open]"), function (d) { return d.className; });
    target.replaceChildren.apply(target, Array.prototype.slice.call(fresh.childNodes));
    open.forEach(function (cls) { var d = target.querySelector("details." + cls.split(" ").join(".")); if (d) { d.open = true; } });
  }
  function refresh() {
    var src = live.getAttribute("data-src");
    if (!src) { return; }
    fetch(src, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        if (kind === "list") {
          var ids = emergencyIds(doc);
          if (ids && knownEmergencies) {
            ids.filter(function (id) {
              return knownEmergencies.indexOf(id) < 0 && !remembered("emergency|" + id);
            }).forEach(function (id) {
              var row = doc.querySelector("ol.rows .row-item.emergency a.number[href='/inbox/r/" + id + "']");
              var item = row ? row.closest(".row-item") : null;
              var who = item ? item.querySelector(".who").textContent : "";
              var what = item ? item.querySelector(".category").textContent : "";
              alarm("Новая авария: " + what + ", заявка № " + id + (who ? " — " + who : ""),
                item ? item.querySelector("a.open").getAttribute("href") : "/inbox/r/" + id);
            });
          }
          if (ids) { knownEmergencies = ids; }
          live.replaceChildren.apply(live, Array.prototype.slice.call(doc.body.childNodes));
          select(selected);
        } else if (kind === "conversation") {
          swap("live-head", doc); swap("live-thread", doc); swap("live-side", doc);
        } else if (kind === "request") {
          var region = document.getElementById("live-request");
          var fresh = doc.querySelector("#live-request") || doc.body;
          if (region && !typing(region)) {
            region.replaceChildren.apply(region, Array.prototype.slice.call((fresh.id ? fresh : doc.body).childNodes));
          }
        } else if (kind === "shift") {
          var main = doc.querySelector("[data-live='shift']");
          if (main && !typing(live)) { live.replaceChildren.apply(live, Array.prototype.slice.call(main.childNodes)); }
        }
        wire(); tick();
      })
      .catch(function () { /* the next event retries */ });
  }
  var pending = null;
  function schedule() {
    if (pending) { return; }
    pending = window.setTimeout(function () { pending = null; refresh(); }, 150);
  }
  function concerns(event) {
    if (kind === "list" || kind === "shift") { return true; }
    var conversation = live.getAttribute("data-conversation");
    var number = live.getAttribute("data-number");
    if (event.type === "delivery") { return true; }
    return (conversation && event.conversation_id === conversation) || (number && event.request_number === number);
  }
  if (live && kind === "list") { knownEmergencies = emergencyIds(live) || []; }
  if (window.EventSource && body.hasAttribute("data-me")) {
    var events = new EventSource("/inbox/events");
    events.onmessage = function (e) {
      var event;
      try { event = JSON.parse(e.data); } catch (err) { return; }
      if (kind !== "list" && event.emergency && event.type === "message.in" && event.request_number &&
          !remembered("emergency|" + event.request_number)) {
        alarm("Новая авария, заявка № " + event.request_number, "/inbox/r/" + event.request_number);
      }
      if ((event.type === "clock.warning" || event.type === "clock.breach") && event.request_number &&
          !remembered(event.type + "|" + event.request_number + "|" + (event.label || ""))) {
        alarm((event.type === "clock.breach" ? "Нарушен срок" : "Истекает срок") + (event.label ? " «" + event.label + "»" : "") +
          " по заявке № " + event.request_number, "/inbox/r/" + event.request_number);
      }
      if (live && concerns(event)) { schedule(); }
    };
  }

  // -- forms: canned replies, counters, closing fields --------------------------------------------
  function wire() {
    var canned = document.getElementById("canned");
    if (canned && !canned.dataset.wired) {
      canned.dataset.wired = "1";
      canned.addEventListener("change", function () {
        var option = canned.options[canned.selectedIndex];
        var text = option ? option.getAttribute("data-text") : null;
        var box = document.getElementById("reply-text");
        if (text && box) {
          box.value = box.value.trim() ? box.value.trim() + "\n\n" + text : text;
          box.focus(); box.dispatchEvent(new Event("input"));
        }
        canned.selectedIndex = 0;
      });
    }
    document.querySelectorAll(".counter[data-for]").forEach(function (counter) {
      var box = document.getElementById(counter.getAttribute("data-for"));
      var max = parseInt(counter.getAttribute("data-max"), 10);
      if (!box || box.dataset.counted) { return; }
      box.dataset.counted = "1";
      var show = function () {
        counter.textContent = box.value.length > max * 0.8 ? box.value.length + " / " + max : "";
      };
      box.addEventListener("input", show); show();
    });
    document.querySelectorAll("form.close-form").forEach(function (form) {
      var select = form.querySelector(".status-select");
      if (!select || select.dataset.wired) { return; }
      select.dataset.wired = "1";
      var update = function () {
        var done = select.value === "done";
        form.querySelectorAll(".when-done").forEach(function (label) {
          label.hidden = !done;
          var input = label.querySelector("input:not([type=file])");
          if (input) { input.required = done; }
        });
      };
      select.addEventListener("change", update); update();
    });
  }

  // -- keyboard ---------------------------------------------------------------------------------
  var selected = -1;
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("ol.rows .row-item")); }
  function select(index) {
    var all = rows();
    all.forEach(function (r) { r.classList.remove("selected"); });
    if (!all.length || index < 0) { selected = -1; return; }
    selected = Math.max(0, Math.min(index, all.length - 1));
    all[selected].classList.add("selected");
    all[selected].scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("keydown", function (e) {
    var target = e.target;
    var editing = /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName) || target.isContentEditable;
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && target.form) {
      e.preventDefault();
      if (target.form.requestSubmit) { target.form.requestSubmit(); } else { target.form.submit(); }
      return;
    }
    if (editing) {
      if (e.key === "Escape") { target.blur(); }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    var focus = function (id) { var el = document.getElementById(id); if (el) { e.preventDefault(); el.focus(); } };
    if (e.key === "/") { var s = document.querySelector(".search-box input"); if (s) { e.preventDefault(); s.focus(); } }
    else if (e.key === "j") { select(selected + 1); }
    else if (e.key === "k") { select(selected - 1); }
    else if (e.key === "Enter" && selected >= 0) { var a = rows()[selected].querySelector("a.open"); if (a) { a.click(); } }
    else if (e.key === "r") { focus("reply-text"); }
    else if (e.key === "n") { focus("note-text"); }
    else if (e.key === "t") { var take = document.getElementById("take-form"); if (take) { take.requestSubmit(); } }
    else if (e.key === "g") { window.location.href = "/inbox/"; }
  });

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.classList || !form.classList.contains("book-slot")) { return; }
    var card = form.closest(".booking");
    var typed = card ? card.querySelector("[data-booking-reason]") : null;
    if (typed && form.elements.reason) { form.elements.reason.value = typed.value; }
  }, true);

  wire();
  tick();
  window.setInterval(tick, 1000);
}());
