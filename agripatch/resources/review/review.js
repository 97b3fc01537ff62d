
(function () {
  var buttons = document.querySelectorAll("nav button[data-filter]");
  var cards = document.querySelectorAll("main .card");
  var shown = document.getElementById("shown");
  function apply(value) {
    var n = 0;
    for (var i = 0; i < cards.length; i++) {
      var show = value === "all" || cards[i].getAttribute("data-class") === value ||
                 cards[i].getAttribute("data-decision") === value ||
                 "sev:" + cards[i].getAttribute("data-sev") === value;
      cards[i].hidden = !show;
      if (show) { n++; }
    }
    for (var j = 0; j < buttons.length; j++) {
      var on = buttons[j].getAttribute("data-filter") === value;
      buttons[j].classList.toggle("on", on);
    }
    shown.textContent = n + " shown";
  }
  function known(value) {
    for (var j = 0; j < buttons.length; j++) {
      if (buttons[j].getAttribute("data-filter") === value) { return true; }
    }
    return false;
  }
  for (var b = 0; b < buttons.length; b++) {
    buttons[b].addEventListener("click", function (event) {
      var value = event.currentTarget.getAttribute("data-filter");
      apply(value);
      if (window.history && history.replaceState) { history.replaceState(null, "", "#class=" + value); }
    });
  }
  var wanted = decodeURIComponent(location.hash.replace(/^#class=/, ""));
  apply(known(wanted) ? wanted : "all");

  // ---- sort: most severe first, or back to least sure first (the page's own order, data-i)
  var sorter = document.getElementById("sort-severity");
  if (sorter) {
    sorter.addEventListener("click", function () {
      var bySeverity = !sorter.classList.contains("on");
      var list = Array.prototype.slice.call(cards);
      list.sort(function (a, b) {
        if (bySeverity) {
          var d = parseFloat(b.getAttribute("data-severity") || "-1") - parseFloat(a.getAttribute("data-severity") || "-1");
          if (d !== 0) { return d; }
        }
        return parseInt(a.getAttribute("data-i"), 10) - parseInt(b.getAttribute("data-i"), 10);
      });
      var main = document.querySelector("main");
      for (var i = 0; i < list.length; i++) { main.appendChild(list[i]); }
      sorter.classList.toggle("on", bySeverity);
      sorter.textContent = bySeverity ? "least sure first" : "most severe first";
    });
  }

  // ---- review: confirm / another class / not a leaf, kept in localStorage, downloaded as CSV
  var data = JSON.parse(document.getElementById("review-data").textContent);
  var classes = data.classes, photos = data.photos;
  var key = "agripatch-review:" + (data.run || location.pathname);
  var store = null;
  try { store = window.localStorage; store.getItem(key); } catch (err) { store = null; }
  var choices = {};
  if (store) {
    try {
      var saved = JSON.parse(store.getItem(key) || "{}");
      if (saved && typeof saved.choices === "object" && saved.choices) { choices = saved.choices; }
    } catch (err) { choices = {}; }
  } else {
    document.getElementById("store-note").textContent =
      "this browser keeps no local storage for this page: download the CSV before closing it";
  }
  function save() {
    if (!store) { return; }
    try { store.setItem(key, JSON.stringify({version: 1, choices: choices})); } catch (err) { /* full */ }
  }
  function valid(choice, photo) {
    if (!choice || typeof choice !== "object") { return false; }
    if (choice.action === "not_a_leaf") { return choice.label === "not_a_leaf"; }
    if (choice.action === "confirm") { return choice.label === classes[photo.predicted]; }
    if (choice.action === "relabel") { return classes.indexOf(choice.label) >= 0; }
    return false;
  }
  var counter = document.getElementById("reviewed");
  var download = document.getElementById("download");
  function count() {
    var n = 0;
    for (var i = 0; i < photos.length; i++) {
      if (valid(choices[photos[i].path], photos[i])) { n++; }
    }
    counter.textContent = n + " reviewed";
    download.disabled = n === 0;
  }
  function show(card, photo) {
    var choice = choices[photo.path];
    var verdict = card.querySelector(".verdict");
    var select = card.querySelector("select[data-act]");
    if (!valid(choice, photo)) {
      card.removeAttribute("data-review");
      verdict.textContent = "";
      select.value = "";
      return;
    }
    card.setAttribute("data-review", choice.action);
    if (choice.action === "confirm") { verdict.textContent = "\u2713 confirmed: " + choice.label; }
    else if (choice.action === "relabel") { verdict.textContent = "\u2192 relabelled: " + choice.label; }
    else { verdict.textContent = "\u2717 not a leaf"; }
    select.value = choice.action === "relabel" ? String(classes.indexOf(choice.label)) : "";
  }
  function choose(card, photo, action, label) {
    if (action === null) { delete choices[photo.path]; }
    else { choices[photo.path] = {action: action, label: label}; }
    save();
    show(card, photo);
    count();
  }
  for (var c = 0; c < cards.length; c++) {
    (function (card) {
      var photo = photos[Number(card.getAttribute("data-i"))];
      var select = card.querySelector("select[data-act]");
      for (var k = 0; k < classes.length; k++) { select.appendChild(new Option(classes[k], String(k))); }
      card.querySelector("button[data-act=confirm]").addEventListener("click", function () {
        choose(card, photo, "confirm", classes[photo.predicted]);
      });
      card.querySelector("button[data-act=not_a_leaf]").addEventListener("click", function () {
        choose(card, photo, "not_a_leaf", "not_a_leaf");
      });
      card.querySelector("button[data-act=undo]").addEventListener("click", function () {
        choose(card, photo, null, null);
      });
      select.addEventListener("change", function () {
        if (select.value === "") { return; }
        var index = Number(select.value);
        choose(card, photo, index === photo.predicted ? "confirm" : "relabel", classes[index]);
      });
      show(card, photo);
    })(cards[c]);
  }
  count();
  function field(value) {
    var text = String(value);
    return /[",\r\n]/.test(text) ? "\"" + text.replace(/"/g, "\"\"") + "\"" : text;
  }
  download.addEventListener("click", function () {
    var lines = [data.header.join(",")];
    for (var i = 0; i < photos.length; i++) {
      var photo = photos[i], choice = choices[photo.path];
      if (!valid(choice, photo)) { continue; }
      lines.push([photo.path, classes[photo.predicted], photo.decision, choice.label, choice.action].map(field).join(","));
    }
    var blob = new Blob([lines.join("\n") + "\n"], {type: "text/csv;charset=utf-8"});
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "corrections.csv";
    document.body.appendChild(link);
    link.click();
    setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  });
  document.body.setAttribute("data-ready", "1");
})();
