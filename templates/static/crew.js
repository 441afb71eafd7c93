// The crew app on a weak connection: each press has its id (made by the page), is sent with fetch and,
// when the network fails, kept and sent again when it returns. The hub applies an id once, so a press
// sent twice is never doubled. Presses without photos also survive closing the page (localStorage).
(function () {
  "use strict";
  var KEY = "adshub-crew-queue:" + document.body.dataset.token;
  var queue = [];
  var state = document.getElementById("net-state");

  function saved() {
    try { return JSON.parse(localStorage.getItem(KEY) || "[]"); } catch (e) { return []; }
  }
  function save() {
    var plain = queue.filter(function (q) { return !q.hasFiles; }).map(function (q) { return { url: q.url, fields: q.fields }; });
    try { localStorage.setItem(KEY, JSON.stringify(plain)); } catch (e) { /* private mode: memory only */ }
  }
  function show(text, ok) {
    state.hidden = !text;
    state.textContent = text || "";
    state.classList.toggle("sent", !!ok);
  }
  function body(item) {
    if (item.data) { return item.data; }
    var data = new FormData();
    Object.keys(item.fields).forEach(function (k) { data.append(k, item.fields[k]); });
    return data;
  }
  var flushing = false;
  function flush() {
    if (flushing || !queue.length) { return; }
    flushing = true;
    var item = queue[0];
    fetch(item.url, { method: "POST", body: body(item), headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        return response.json().catch(function () { return { ok: response.ok }; }).then(function (answer) {
          queue.shift();
          save();
          flushing = false;
          if (!answer.ok) { show(answer.error || "Действие не принято", false); return; }
          if (queue.length) { flush(); } else { show("Отправлено", true); window.location.reload(); }
        });
      })
      .catch(function () {
        flushing = false;
        show("Нет связи — действие сохранено и уйдёт, когда появится сеть (" + queue.length + ")", false);
      });
  }
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.classList.contains("crew-action")) { return; }
    e.preventDefault();
    var data = new FormData(form);
    var fields = {};
    var hasFiles = false;
    data.forEach(function (value, key) {
      if (typeof value === "string") { fields[key] = value; } else if (value && value.size) { hasFiles = true; }
    });
    queue.push({ url: form.action, fields: fields, data: hasFiles ? data : null, hasFiles: hasFiles });
    save();
    Array.prototype.forEach.call(form.querySelectorAll("button"), function (b) { b.disabled = true; });
    show("Отправляем…", false);
    flush();
  });
  window.addEventListener("online", flush);
  window.setInterval(flush, 10000);
  queue = saved();
  if (queue.length) { show("Отправляем сохранённые действия (" + queue.length + ")", false); flush(); }
}());
