// The served review page (agripatch review serve): photos a page at a time from /api/N/photos, each decision
// POSTed and shown as saved only once the server has committed it. Every name, note and path reaches the page
// through textContent or an attribute, never as HTML; the server's Content-Security-Policy forbids inline script.
(function () {
  "use strict";
  var boot = JSON.parse(document.getElementById("boot").textContent);
  var api = "/api/" + boot.output + "/";
  var classes = boot.classes;
  var state = {show: "all", offset: 0, total: 0, sort: ""};
  var nameKey = "agripatch-reviewer";

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) { for (var k in attrs) { if (attrs[k] !== null && attrs[k] !== undefined) { node.setAttribute(k, attrs[k]); } } }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function labelText(label) { return label === "not_a_leaf" ? "not a leaf" : label; }

  // ---- layout
  var header = el("header");
  header.appendChild(el("h1", null, boot.title));
  header.appendChild(el("p", null, boot.photos + " photos, least sure first \u00b7 decisions are saved on the server for the whole team"));
  var who = el("p", {"class": "who"});
  var nameLabel = el("label", {"for": "reviewer"}, "Your name: ");
  var nameInput = el("input", {id: "reviewer", maxlength: "64", autocomplete: "name", placeholder: "who is reviewing"});
  who.appendChild(nameLabel); who.appendChild(nameInput);
  who.appendChild(el("span", {id: "status", role: "status"}));
  header.appendChild(who);
  var nav = el("nav");
  var filters = [["all", "all (" + boot.photos + ")"]];
  for (var c = 0; c < classes.length; c++) { if (boot.counts[c]) { filters.push([String(c), classes[c] + " (" + boot.counts[c] + ")"]); } }
  for (var r in boot.refusals) { if (boot.refusals[r]) { filters.push([r, "refused: " + labelText(r) + " (" + boot.refusals[r] + ")"]); } }
  for (var sv in boot.severity) { filters.push(["sev:" + sv, "severity: " + sv + " (" + boot.severity[sv] + ")"]); }
  filters.push(["conflicts", "reviewers disagree"], ["unreviewed", "not reviewed"], ["reviewed", "reviewed"], ["mine", "mine"]);
  var filterButtons = [];
  filters.forEach(function (f) {
    var b = el("button", {type: "button", "data-filter": f[0]}, f[1]);
    b.addEventListener("click", function () { state.show = f[0]; state.offset = 0; load(); });
    nav.appendChild(b); filterButtons.push(b);
  });
  if (Object.keys(boot.severity || {}).length) {
    var sorter = el("button", {type: "button", id: "sort-severity"}, "most severe first");
    sorter.addEventListener("click", function () {
      state.sort = state.sort === "severity" ? "" : "severity"; state.offset = 0;
      sorter.classList.toggle("on", state.sort === "severity");
      sorter.textContent = state.sort === "severity" ? "least sure first" : "most severe first";
      load();
    });
    nav.appendChild(sorter);
  }
  var shown = el("span", {id: "shown"});
  var prev = el("button", {type: "button", id: "prev"}, "\u2190 previous");
  var next = el("button", {type: "button", id: "next"}, "next \u2192");
  prev.addEventListener("click", function () { state.offset = Math.max(0, state.offset - boot.page); load(); });
  next.addEventListener("click", function () { state.offset += boot.page; load(); });
  var download = el("a", {id: "download", href: api + "corrections.csv", download: "corrections.csv"}, "Download corrections CSV");
  var uploadLabel = el("label", {"class": "upload"}, "Upload an offline corrections.csv ");
  var upload = el("input", {type: "file", id: "upload", accept: ".csv,text/csv"});
  uploadLabel.appendChild(upload);
  [shown, prev, next, download, uploadLabel].forEach(function (n) { nav.appendChild(n); });
  var progress = el("section", {id: "progress"});
  var main = el("main", {id: "cards"});
  var footer = el("footer", null, "Served by agripatch review serve. A photo counts as reviewed when its reviewers agree; " +
    "where they disagree, one of them settles it. The download holds the agreed and settled decisions; " +
    "agripatch datasets add-reviewed --db adds them to a training set.");
  [header, nav, progress, main, footer].forEach(function (n) { document.body.appendChild(n); });

  nameInput.value = (function () { try { return localStorage.getItem(nameKey) || ""; } catch (e) { return ""; } })();
  nameInput.addEventListener("change", function () {
    try { localStorage.setItem(nameKey, nameInput.value.trim()); } catch (e) { /* private mode */ }
    enableControls(); load();
  });
  function reviewer() { return nameInput.value.trim(); }
  function setStatus(text, bad) { var s = document.getElementById("status"); s.textContent = text; s.className = bad ? "bad" : ""; }

  // ---- server calls
  function request(method, url, body, type) {
    var headers = {"X-Agripatch-Review": "1"};
    if (type) { headers["Content-Type"] = type; }
    return fetch(url, {method: method, body: body, headers: headers, credentials: "same-origin"}).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!response.ok) { throw new Error((data && data.error) || ("HTTP " + response.status)); }
        return data;
      });
    });
  }

  // ---- cards
  function card(photo) {
    var node = el("article", {"class": "card", "data-i": photo.i});
    if (photo.overlay) {
      var a = el("a", {href: photo.original});
      a.appendChild(el("img", {"class": "ov", src: photo.overlay, loading: "lazy", alt: photo.path}));
      node.appendChild(a);
    }
    var meta = el("div", {"class": "meta"});
    meta.appendChild(el("b", null, classes[photo.predicted]));
    meta.appendChild(document.createTextNode(" "));
    meta.appendChild(el("span", {"class": photo.confidence < 0.5 ? "conf low" : "conf"}, (photo.confidence * 100).toFixed(1) + "%"));
    meta.appendChild(document.createTextNode(" \u00b7 stage " + photo.stage + (photo.whole_photo ? " (whole photo)" : "") +
      " \u00b7 " + (photo.macs / 1e9).toFixed(3) + " GMACs" +
      (photo.turned ? " \u00b7 read turned " + photo.turned + "\u00b0 clockwise" : "")));
    if (photo.severity !== null && photo.severity !== undefined) {
      meta.appendChild(document.createTextNode(" \u00b7 "));
      meta.appendChild(el("span", {"class": "sev"}, "severity " + Number(photo.severity).toFixed(1) + "% (" +
        photo.severity_class + ")"));
    }
    if (photo.decision !== classes[photo.predicted]) {
      meta.appendChild(el("span", {"class": "refused"}, (photo.decision === "not_a_leaf" || photo.decision === "unsure" ?
        "refused: " + labelText(photo.decision).replace("_", " ") : "decision: " + photo.decision)));
    }
    node.appendChild(meta);
    var name = el("div", {"class": "name"}); name.appendChild(el("a", {href: photo.original}, photo.path));
    node.appendChild(name);
    var crops = el("div", {"class": "crops"});
    photo.boxes.forEach(function (box) {
      if (!box.url) { return; }
      var fig = el("figure", box.read ? null : {"class": "unread"});
      var link = el("a", {href: box.url}); link.appendChild(el("img", {src: box.url, loading: "lazy", alt: "patch " + box.k}));
      fig.appendChild(link);
      fig.appendChild(el("figcaption", null, box.k + ": " + (box.read ? classes[box.label_index] + " " + Math.round(box.prob * 100) + "%" : "not read")));
      crops.appendChild(fig);
    });
    if (crops.childNodes.length) { node.appendChild(crops); }
    var controls = el("div", {"class": "review"});
    var confirm = el("button", {type: "button", "data-act": "confirm"}, "confirm");
    var select = el("select", {"data-act": "relabel", "aria-label": "another class"});
    select.appendChild(new Option("another class\u2026", ""));
    classes.forEach(function (name, k) { select.appendChild(new Option(name, String(k))); });
    var notLeaf = el("button", {type: "button", "data-act": "not_a_leaf"}, "not a leaf");
    var undo = el("button", {type: "button", "data-act": "undo", "class": "undo"}, "undo");
    var settle = el("button", {type: "button", "data-act": "settle", "class": "settle"}, "settle with my choice");
    var note = el("input", {"class": "note", maxlength: "2000", placeholder: "note (optional)", "aria-label": "note"});
    [confirm, select, notLeaf, undo, settle, note].forEach(function (n) { controls.appendChild(n); });
    controls.appendChild(el("span", {"class": "verdict"}));
    controls.appendChild(el("span", {"class": "saved", role: "status"}));
    node.appendChild(controls);
    node.appendChild(el("ul", {"class": "others"}));

    function send(action, label, settles) {
      if (!reviewer()) { setStatus("type your name first: every decision records who made it", true); nameInput.focus(); return; }
      var saved = node.querySelector(".saved");
      saved.textContent = "saving\u2026"; saved.className = "saved";
      request("POST", api + "decisions", JSON.stringify({photo: photo.i, reviewer: reviewer(), action: action, label: label,
        note: note.value, settles: settles}), "application/json").then(function (data) {
        show(node, data.card); saved.textContent = "saved"; saved.className = "saved ok"; refreshProgress();
      }).catch(function (error) { saved.textContent = "not saved: " + error.message; saved.className = "saved bad"; });
    }
    confirm.addEventListener("click", function () { send("confirm", classes[photo.predicted], false); });
    notLeaf.addEventListener("click", function () { send("not_a_leaf", "not_a_leaf", false); });
    undo.addEventListener("click", function () { send("clear", "", false); });
    select.addEventListener("change", function () {
      if (select.value === "") { return; }
      var k = Number(select.value);
      send(k === photo.predicted ? "confirm" : "relabel", classes[k], false);
    });
    settle.addEventListener("click", function () {
      var mine = own(node.photo);
      if (!mine) { setStatus("decide on this photo first, then settle with your choice", true); return; }
      send(mine.action, mine.label, true);
    });
    show(node, photo);
    return node;
  }
  function own(photo) {
    for (var i = 0; i < photo.decisions.length; i++) { if (photo.decisions[i].reviewer === reviewer()) { return photo.decisions[i]; } }
    return null;
  }
  function show(node, photo) {
    node.photo = photo;
    var mine = own(photo);
    var verdict = node.querySelector(".verdict");
    var select = node.querySelector("select[data-act]");
    if (mine) {
      node.setAttribute("data-review", mine.action);
      verdict.textContent = mine.action === "confirm" ? "\u2713 confirmed: " + mine.label :
        mine.action === "relabel" ? "\u2192 relabelled: " + mine.label : "\u2717 not a leaf";
      select.value = mine.action === "relabel" ? String(classes.indexOf(mine.label)) : "";
    } else {
      node.removeAttribute("data-review"); verdict.textContent = ""; select.value = "";
    }
    if (photo.conflict) { node.setAttribute("data-conflict", "1"); } else { node.removeAttribute("data-conflict"); }
    var list = node.querySelector(".others");
    while (list.firstChild) { list.removeChild(list.firstChild); }
    photo.decisions.forEach(function (d) {
      var item = el("li", {"data-reviewer": d.reviewer}, d.reviewer + ": " + labelText(d.label) + (d.settles ? " (settled)" : "") +
        (d.note ? " \u2014 " + d.note : ""));
      list.appendChild(item);
    });
    if (photo.conflict) { list.appendChild(el("li", {"class": "conflict"}, "reviewers disagree: settle it to count it")); }
  }
  // The status line says who is reviewing only when that changes, so a reload (a filter, a page, the one after an
  // upload) never wipes the message the reviewer has yet to read (e.g. the upload's refused rows).
  var announced = null;
  function enableControls() {
    var off = !reviewer();
    var buttons = document.querySelectorAll(".review button, .review select, .review input");
    for (var i = 0; i < buttons.length; i++) { buttons[i].disabled = off; }
    upload.disabled = off;
    if (announced === reviewer()) { return; }
    announced = reviewer();
    if (off) { setStatus("type your name to review", true); } else { setStatus("reviewing as " + reviewer(), false); }
  }

  // ---- listing and progress
  // Every listing (a filter, a page, an upload) also fetches the totals, so a reviewer sees the others' work
  // without saving something first.
  function load() {
    drawProgress();
    filterButtons.forEach(function (b) { b.classList.toggle("on", b.getAttribute("data-filter") === state.show); });
    if (history.replaceState) { history.replaceState(null, "", "#show=" + encodeURIComponent(state.show) + "&offset=" + state.offset); }
    var url = api + "photos?offset=" + state.offset + "&limit=" + boot.page + "&show=" + encodeURIComponent(state.show) +
      "&reviewer=" + encodeURIComponent(reviewer()) + (state.sort ? "&sort=" + state.sort : "");
    document.body.removeAttribute("data-ready");
    return request("GET", url).then(function (data) {
      state.total = data.total;
      while (main.firstChild) { main.removeChild(main.firstChild); }
      data.photos.forEach(function (photo) { main.appendChild(card(photo)); });
      var last = Math.min(state.offset + data.photos.length, data.total);
      shown.textContent = data.total ? (state.offset + 1) + "\u2013" + last + " of " + data.total + " shown" : "0 shown";
      prev.disabled = state.offset === 0; next.disabled = last >= data.total;
      enableControls();
      document.body.setAttribute("data-ready", "1");
    }).catch(function (error) { setStatus("cannot load photos: " + error.message, true); });
  }
  var progressTimer = null;
  function refreshProgress() { clearTimeout(progressTimer); progressTimer = setTimeout(drawProgress, 300); }
  function drawProgress() {
    return request("GET", api + "progress").then(function (p) {
      while (progress.firstChild) { progress.removeChild(progress.firstChild); }
      progress.appendChild(el("p", {id: "totals"}, p.decided + " of " + p.photos + " photos reviewed \u00b7 " + p.conflicts +
        " where reviewers disagree \u00b7 " + p.decisions + " decisions"));
      var table = el("table", {"class": "per-class"});
      var head = el("tr"); ["class", "reviewed", "photos", "disagree"].forEach(function (t) { head.appendChild(el("th", null, t)); });
      table.appendChild(head);
      p.classes.forEach(function (row) {
        var tr = el("tr"); [row.name, row.reviewed, row.total, row.conflicts].forEach(function (t) { tr.appendChild(el("td", null, t)); });
        table.appendChild(tr);
      });
      progress.appendChild(table);
      var people = el("ul", {"class": "reviewers"});
      p.reviewers.forEach(function (row) { people.appendChild(el("li", null, row.name + ": " + row.photos + " photos")); });
      progress.appendChild(people);
    }).catch(function (error) { setStatus("cannot load progress: " + error.message, true); });
  }
  upload.addEventListener("change", function () {
    var file = upload.files[0];
    if (!file) { return; }
    file.text().then(function (text) {
      return request("POST", api + "corrections?reviewer=" + encodeURIComponent(reviewer()), text, "text/csv");
    }).then(function (result) {
      setStatus("uploaded: " + result.saved + " decision(s) saved, " + result.refused.length + " row(s) refused" +
        result.refused.slice(0, 5).map(function (r) { return " \u00b7 line " + r.line + ": " + r.message; }).join(""), result.refused.length > 0);
      upload.value = ""; load();
    }).catch(function (error) { setStatus("upload refused: " + error.message, true); upload.value = ""; });
  });

  var wanted = /show=([^&]*)(?:&offset=(\d+))?/.exec(location.hash);
  if (wanted) {
    var value = decodeURIComponent(wanted[1]);
    if (filters.some(function (f) { return f[0] === value; })) { state.show = value; state.offset = Number(wanted[2] || 0); }
  }
  load();
})();
