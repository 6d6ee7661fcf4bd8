// errand dashboard: the live badge follows the page's SSE connection.
// htmx's SSE extension fires these events on the element holding the
// connection; they bubble to the body.
(function () {
  function show(state, text) {
    var badge = document.getElementById("live");
    if (badge) {
      badge.className = "live " + state;
      badge.textContent = text;
    }
  }
  document.addEventListener("htmx:sseOpen", function () { show("on", "live"); });
  document.addEventListener("htmx:sseError", function () { show("off", "reconnecting…"); });
  document.addEventListener("htmx:sseClose", function () { show("done", "finished"); });
})();
