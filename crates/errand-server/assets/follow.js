// errand: the page a per-job link opens follows the job's SSE stream
// (with the same link) and draws its status, progress, log and outcome.
(function () {
  var root = document.getElementById("follow");
  if (!root || !window.EventSource) { return; }
  function byId(id) { return document.getElementById(id); }
  function text(id, value) { byId(id).textContent = value; }
  function showStatus(status) {
    byId("status").innerHTML = "";
    var badge = document.createElement("span");
    badge.className = "status " + status;
    badge.textContent = status;
    byId("status").appendChild(badge);
  }
  function showProgress(progress) {
    if (!progress || progress.fraction == null) { return; }
    var percent = Math.round(Math.max(0, Math.min(1, progress.fraction)) * 100);
    var box = byId("progress");
    box.innerHTML = "";
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.value = percent;
    bar.setAttribute("aria-label", progress.message || "");
    box.appendChild(bar);
    var label = document.createElement("span");
    label.className = "muted percent";
    label.textContent = " " + percent + "% " + (progress.message || "");
    box.appendChild(label);
  }
  function addLog(line) {
    var item = document.createElement("li");
    item.textContent = line;
    byId("log").appendChild(item);
  }
  var maxAttempts = "?";
  var stream = new EventSource(root.getAttribute("data-stream"));
  stream.onopen = function () { text("connection", "live"); };
  stream.onerror = function () { text("connection", "reconnecting…"); };
  stream.addEventListener("status", function (e) {
    var data = JSON.parse(e.data);
    // The first status event is the whole job; later ones are events.
    var job = data.data ? null : data;
    showStatus(job ? job.status : data.status);
    if (job) {
      maxAttempts = job.max_attempts;
      text("attempt", job.attempt + " of " + maxAttempts);
      showProgress(job.progress);
    } else if (data.data.attempt) {
      text("attempt", data.data.attempt + " of " + maxAttempts);
    }
  });
  stream.addEventListener("progress", function (e) {
    showProgress(JSON.parse(e.data).data);
  });
  stream.addEventListener("log", function (e) {
    addLog(JSON.parse(e.data).data.line);
  });
  stream.addEventListener("result", function (e) {
    var event = JSON.parse(e.data);
    showStatus(event.status);
    text("outcome", JSON.stringify(event.data.result, null, 2));
  });
  stream.addEventListener("failure", function (e) {
    var event = JSON.parse(e.data);
    showStatus(event.status);
    text("outcome", event.data.error.message);
  });
  stream.addEventListener("end", function (e) {
    showStatus(JSON.parse(e.data).status);
    text("connection", "finished");
    stream.close();
  });
})();
