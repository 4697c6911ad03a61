// Gristmill console behaviours. Loaded as a file: the Content-Security-Policy allows no
// inline script. Everything is attached by data-* attributes.
(function () {
  "use strict";

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrf();
  });

  document.addEventListener("click", function (event) {
    var target = event.target.closest("[data-copy]");
    if (target) {
      var source = document.querySelector(target.getAttribute("data-copy"));
      var text = source ? (source.value !== undefined && source.tagName !== "CODE" && source.tagName !== "PRE" ? source.value : source.textContent) : "";
      if (navigator.clipboard) { navigator.clipboard.writeText(text.trim()); }
      target.textContent = "Copied";
      setTimeout(function () { target.textContent = "Copy"; }, 1500);
      return;
    }
    var reveal = event.target.closest("[data-reveal]");
    if (reveal) {
      var hidden = document.querySelector(reveal.getAttribute("data-reveal"));
      if (hidden) {
        hidden.classList.toggle("hidden");
        reveal.textContent = hidden.classList.contains("hidden") ? "Reveal" : "Hide";
      }
    }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  // -- charts (uPlot) -------------------------------------------------------------------
  var palette = ["#2f62a3", "#d9822b", "#1e7b45", "#b3261e", "#7e57c2", "#00838f", "#8d6e63"];

  function drawChart(el) {
    if (el.dataset.drawn || typeof uPlot === "undefined") { return; }
    var spec = JSON.parse(el.getAttribute("data-chart"));
    el.dataset.drawn = "1";
    if (!spec.x || spec.x.length === 0) {
      el.textContent = spec.empty || "No values yet.";
      el.classList.add("muted");
      return;
    }
    var series = [{ label: spec.xLabel || "" }];
    var data = [spec.x];
    spec.series.forEach(function (s, i) {
      series.push({ label: s.label, stroke: palette[i % palette.length], width: 2,
                    spanGaps: true, points: { show: spec.x.length < 60 } });
      data.push(s.values);
    });
    var opts = { width: Math.max(320, el.clientWidth || 600), height: spec.height || 220,
                 series: series, scales: { x: { time: spec.time !== false } },
                 axes: [{ stroke: getComputedStyle(document.body).color },
                        { stroke: getComputedStyle(document.body).color }] };
    new uPlot(opts, data, el);
  }

  function drawAll(root) {
    (root || document).querySelectorAll("[data-chart]").forEach(drawChart);
  }

  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:afterSettle", function (event) { drawAll(event.target); });

  // -- data store upload (presigned POST, or multipart for large files) -----------------
  var DEFAULT_PART = 16 * 1024 * 1024;

  function post(url, body) {
    return fetch(url, { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body) }).then(function (r) {
        return r.json().then(function (json) {
          if (!r.ok) { throw new Error(json.message || r.statusText); }
          return json;
        });
      });
  }

  function send(method, url, body, headers, onProgress) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open(method, url);
      Object.keys(headers || {}).forEach(function (k) { xhr.setRequestHeader(k, headers[k]); });
      xhr.upload.onprogress = function (e) { if (e.lengthComputable) { onProgress(e.loaded); } };
      xhr.onload = function () {
        if (xhr.status >= 200 && xhr.status < 300) { resolve(xhr); }
        else { reject(new Error("upload answered " + xhr.status + ": " + xhr.responseText.slice(0, 300))); }
      };
      xhr.onerror = function () { reject(new Error("upload failed (network)")); };
      xhr.send(body);
    });
  }

  function upload(file, path, bar, status, part) {
    var PART = part;
    bar.max = file.size || 1; bar.value = 0;
    if (file.size <= PART) {
      return post("/console/data-store/upload-url", { path: path }).then(function (signed) {
        var form = new FormData();
        Object.keys(signed.fields || {}).forEach(function (k) { form.append(k, signed.fields[k]); });
        form.append("file", file);
        return send("POST", signed.url, form, {}, function (n) { bar.value = n; });
      });
    }
    return post("/console/data-store/multipart", { path: path, size: file.size, chunk_size: PART })
      .then(function (start) {
        var parts = [], done = 0, chain = Promise.resolve();
        var count = Math.ceil(file.size / PART);
        for (var i = 1; i <= count; i++) {
          (function (n) {
            chain = chain.then(function () {
              return post("/console/data-store/multipart/part", { path: path, part_number: n,
                chunk_size: PART, size: file.size, config: start.config });
            }).then(function (signed) {
              var blob = file.slice((n - 1) * PART, Math.min(n * PART, file.size));
              return send("PUT", signed.url, blob, signed.headers || {}, function (x) { bar.value = done + x; })
                .then(function (xhr) {
                  done += blob.size;
                  parts.push({ number: n, metadata: xhr.getResponseHeader("ETag") || "" });
                  status.textContent = "Part " + n + " of " + count + " sent";
                });
            });
          })(i);
        }
        return chain.then(function () {
          return post("/console/data-store/multipart/end", { path: path, config: start.config, parts: parts });
        });
      });
  }

  function startUploads(zone, files) {
    var prefix = zone.getAttribute("data-prefix") || "";
    var status = zone.querySelector("[data-upload-status]");
    var bar = zone.querySelector("progress");
    var part = parseInt(zone.getAttribute("data-part-size"), 10) || DEFAULT_PART;
    var chain = Promise.resolve();
    Array.prototype.forEach.call(files, function (file) {
      chain = chain.then(function () {
        status.textContent = "Uploading " + file.name + "…";
        return upload(file, prefix + file.name, bar, status, part).then(function () {
          status.textContent = "Uploaded " + prefix + file.name;
        });
      });
    });
    chain.then(function () {
      document.body.dispatchEvent(new Event("datastore-changed"));
    }).catch(function (error) {
      status.textContent = "Upload failed: " + error.message;
      status.classList.add("error");
    });
  }

  document.addEventListener("change", function (event) {
    var input = event.target;
    if (input.matches("[data-upload-input]")) {
      startUploads(input.closest("[data-upload]"), input.files);
    }
  });
  document.addEventListener("dragover", function (event) {
    var zone = event.target.closest && event.target.closest("[data-upload]");
    if (zone) { event.preventDefault(); zone.classList.add("over"); }
  });
  document.addEventListener("dragleave", function (event) {
    var zone = event.target.closest && event.target.closest("[data-upload]");
    if (zone) { zone.classList.remove("over"); }
  });
  document.addEventListener("drop", function (event) {
    var zone = event.target.closest && event.target.closest("[data-upload]");
    if (zone) {
      event.preventDefault(); zone.classList.remove("over");
      startUploads(zone, event.dataTransfer.files);
    }
  });
})();
