/* Norn dashboard: times in the viewer's own time zone. Each
   <time datetime="...UTC ISO..." data-viewer-time> is rendered by the server in UTC;
   this fills in the browser's local time (Intl.DateTimeFormat, no library) and each
   [data-viewer-zone] with the zone's name. Without JavaScript the UTC text stays.
   Each [data-countdown="...UTC ISO..."] (a verification's deadline) counts down every
   second in the words the server rendered it with (api/ui/deployment_pages.py _left). */
(function () {
  "use strict";
  var base = { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
    minute: "2-digit", hourCycle: "h23", timeZoneName: "short" };
  function formatter(withSeconds) {
    var options = Object.assign({}, base);
    if (withSeconds) { options.second = "2-digit"; }
    return new Intl.DateTimeFormat(undefined, options);
  }
  function fill(root) {
    var minutes = formatter(false), seconds = formatter(true);
    root.querySelectorAll("time[data-viewer-time]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) { return; }
      if (!el.title) { el.title = el.textContent.trim(); }  // the UTC time, on hover
      var fmt = el.getAttribute("data-viewer-time") === "seconds" ? seconds : minutes;
      el.textContent = fmt.format(when);
      el.setAttribute("data-filled", "");
    });
    var zone = new Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
    root.querySelectorAll("[data-viewer-zone]").forEach(function (el) {
      el.textContent = "your time (" + zone + ")";
    });
  }
  function left(deadline) {
    var seconds = Math.floor((deadline - Date.now()) / 1000);
    if (seconds <= 0) { return "deadline passed: failing it is due"; }
    var minutes = Math.floor(seconds / 60), rest = seconds % 60;
    return minutes ? minutes + " min " + rest + " s left" : rest + " s left";
  }
  function tick() {
    document.querySelectorAll("[data-countdown]").forEach(function (el) {
      var deadline = new Date(el.getAttribute("data-countdown")).getTime();
      if (!isNaN(deadline)) { el.textContent = left(deadline); }
    });
  }
  function start() {
    fill(document);
    tick();
    window.setInterval(tick, 1000);
    // Fragments htmx swaps in later carry their own times.
    document.body.addEventListener("htmx:afterSwap", function (event) { fill(event.target); });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
