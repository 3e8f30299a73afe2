// Live updates for the status and project pages: server-sent events from /api/events, polling
// every 5 s only when the event stream is unavailable. On each update the page's live part
// (#live) is fetched again and swapped in; the graph filter is applied again afterwards.
(function () {
  "use strict";
  var badge = document.getElementById("live-state");
  function say(text) { if (badge) { badge.textContent = text; } }
  function filter() {
    var box = document.getElementById("filter");
    var text = box ? box.value.trim().toLowerCase() : "";
    document.querySelectorAll("svg.graph .node").forEach(function (n) {
      var path = (n.getAttribute("data-path") || "").toLowerCase();
      var hit = text !== "" && path.indexOf(text) !== -1;
      n.classList.toggle("match", hit);
      n.classList.toggle("dim", text !== "" && !hit);
    });
  }
  var shown = document.body.getAttribute("data-generation");
  var loading = false, again = false;
  function refresh() {
    if (loading) { again = true; return; }
    loading = true;
    fetch(window.location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live"), old = document.getElementById("live");
        if (fresh && old) { old.replaceWith(fresh); filter(); }
        shown = doc.body.getAttribute("data-generation");
        document.body.setAttribute("data-generation", shown || "");
      })
      .catch(function () { say("update failed, retrying"); })
      .then(function () { loading = false; if (again) { again = false; refresh(); } });
  }
  var polling = null;
  function poll() {
    if (polling === null) { polling = window.setInterval(refresh, 5000); say("polling every 5 s"); }
  }
  var box = document.getElementById("filter");
  if (box) { box.addEventListener("input", filter); }
  if (!window.EventSource) { poll(); return; }
  var source = new EventSource("/api/events");
  source.addEventListener("update", function (e) {
    say("live");
    if (polling !== null) { window.clearInterval(polling); polling = null; }
    // Each event carries the engine's change counter: reload only what is not shown yet.
    if (e.data !== shown) { refresh(); }
  });
  source.onerror = function () { poll(); };
})();
