(function () {
  "use strict";
  // Client-side tables of the report: filter, search and page the embedded rows.
  // Data is read from the embedded JSON blocks and written with
  // textContent only; nothing from the data ever becomes markup, a URL or a class name.
  var PAGE_SIZE = 100;
  var HASH_KEYS = { category: "cat", source_system: "src", finding_status: "st", age: "age", min_amount: "amt", q: "q" };
  // Filters that are not one column's exact value.
  var SPECIAL = { q: 1, age: 1, min_amount: 1 };
  var AGE_BUCKETS = { "0-2": [0, 2], "3-7": [3, 7], "8-30": [8, 30], ">30": [31, Infinity] };

  function money(v) {
    var n = typeof v === "number" ? v : parseFloat(v);
    if (!isFinite(n)) { return String(v); }
    var neg = n < 0;
    var parts = Math.abs(n).toFixed(2).split(".");
    return (neg ? "-" : "") + fmt(parts[0]) + "." + parts[1];
  }
  var NONE = "__none__";

  function fmt(n) {
    return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  function make(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function readHash() {
    var out = {};
    var raw = window.location.hash.replace(/^#/, "");
    if (!raw) { return out; }
    raw.split("&").forEach(function (part) {
      var eq = part.indexOf("=");
      if (eq < 0) { return; }
      try {
        out[decodeURIComponent(part.slice(0, eq))] = decodeURIComponent(part.slice(eq + 1).replace(/\+/g, " "));
      } catch (e) { /* a malformed hash is ignored */ }
    });
    return out;
  }

  function Table(root) {
    var source = document.getElementById(root.getAttribute("data-source"));
    this.root = root;
    this.data = JSON.parse(source.textContent);
    this.columns = this.data.columns;
    this.rows = this.data.rows;
    this.index = {};
    for (var i = 0; i < this.columns.length; i++) { this.index[this.columns[i].key] = i; }
    this.catCss = {};
    this.catLabel = {};
    var cats = this.data.categories || [];
    for (var c = 0; c < cats.length; c++) {
      this.catCss[cats[c].code] = /^c[0-9]+$/.test(cats[c].css) ? cats[c].css : "cx";
      this.catLabel[cats[c].code] = cats[c].zh + " / " + cats[c].en;
    }
    this.fields = this.data.fields || {};
    this.statuses = this.data.statuses || {};
    this.decisions = this.data.decisions || {};
    this.main = [];
    for (var m = 0; m < this.columns.length; m++) { if (!this.columns[m].detail) { this.main.push(m); } }
    this.sortNode = root.querySelector("[data-sort]");
    this.searchNode = root.querySelector("input[data-filter=q]");
    this.causes = this.data.causes || {};
    this.useHash = root.getAttribute("data-hash") === "1";
    this.tbody = root.querySelector("tbody");
    this.countNode = root.querySelector("[data-role=count]");
    this.pageNode = root.querySelector("[data-role=page]");
    this.controls = root.querySelectorAll("[data-filter]");
    this.filters = {};
    this.page = 0;
    this.matches = [];
    this.haystack = null;
    this.bind();
  }

  Table.prototype.search = function (rowIndex) {
    if (this.haystack === null) {
      this.haystack = new Array(this.rows.length);
      for (var r = 0; r < this.rows.length; r++) {
        this.haystack[r] = this.rows[r].map(function (v) { return v === null ? "" : String(v); }).join("\u0001").toLowerCase();
      }
    }
    return this.haystack[rowIndex];
  };

  Table.prototype.readControls = function () {
    var f = {};
    for (var i = 0; i < this.controls.length; i++) {
      var el = this.controls[i];
      var v = el.value.trim();
      if (v) { f[el.getAttribute("data-filter")] = v; }
    }
    this.filters = f;
  };

  Table.prototype.writeControls = function () {
    for (var i = 0; i < this.controls.length; i++) {
      var el = this.controls[i];
      var want = this.filters[el.getAttribute("data-filter")] || "";
      if (el.tagName === "SELECT") {
        var known = false;
        for (var o = 0; o < el.options.length; o++) { if (el.options[o].value === want) { known = true; } }
        if (!known) { want = ""; delete this.filters[el.getAttribute("data-filter")]; }
      }
      el.value = want;
    }
  };

  Table.prototype.fromHash = function () {
    var h = readHash();
    var f = {};
    var keys = Object.keys(HASH_KEYS);
    for (var i = 0; i < keys.length; i++) {
      if (h[HASH_KEYS[keys[i]]]) { f[keys[i]] = h[HASH_KEYS[keys[i]]]; }
    }
    this.filters = f;
    var p = parseInt(h.p, 10);
    this.writeControls();
    this.filter();
    this.page = isFinite(p) && p > 0 ? p - 1 : 0;
    this.render();
  };

  Table.prototype.toHash = function () {
    if (!this.useHash) { return; }
    var parts = [];
    var keys = Object.keys(HASH_KEYS);
    for (var i = 0; i < keys.length; i++) {
      if (this.filters[keys[i]]) {
        parts.push(HASH_KEYS[keys[i]] + "=" + encodeURIComponent(this.filters[keys[i]]));
      }
    }
    if (this.page > 0) { parts.push("p=" + (this.page + 1)); }
    var next = parts.length ? "#" + parts.join("&") : "";
    if (next !== window.location.hash && !(next === "" && window.location.hash === "#")) {
      this.ownHash = next;
      try {
        window.history.replaceState(null, "", next || window.location.pathname + window.location.search);
      } catch (e) {
        window.location.replace(next || "#");
      }
    }
  };

  Table.prototype.filter = function () {
    var f = this.filters;
    var keys = Object.keys(f).filter(function (k) { return !SPECIAL[k]; });
    var age = f.age && AGE_BUCKETS[f.age] ? AGE_BUCKETS[f.age] : null;
    var ageCol = this.index.age_days;
    var minAmount = f.min_amount ? parseFloat(f.min_amount) : NaN;
    var amountCol = this.index.amount_at_risk;
    var cols = [];
    for (var k = 0; k < keys.length; k++) {
      if (this.index[keys[k]] !== undefined) { cols.push([this.index[keys[k]], f[keys[k]]]); }
    }
    var q = (f.q || "").toLowerCase();
    var out = [];
    for (var r = 0; r < this.rows.length; r++) {
      var row = this.rows[r];
      var ok = true;
      for (var c = 0; c < cols.length && ok; c++) {
        var v = row[cols[c][0]];
        ok = cols[c][1] === NONE ? v === null || v === "" : v === cols[c][1];
      }
      if (ok && age && ageCol !== undefined) {
        var a = row[ageCol];
        ok = typeof a === "number" && a >= age[0] && a <= age[1];
      }
      if (ok && isFinite(minAmount) && amountCol !== undefined) {
        var amount = parseFloat(row[amountCol]);
        ok = isFinite(amount) && Math.abs(amount) >= minAmount;
      }
      if (ok && q && this.search(r).indexOf(q) < 0) { ok = false; }
      if (ok) { out.push(r); }
    }
    var sortKey = this.sortNode ? this.sortNode.value : "";
    var sortCol = sortKey ? this.index[sortKey] : undefined;
    if (sortCol !== undefined) {
      var rows = this.rows;
      out.sort(function (x, y) {
        var a = parseFloat(rows[x][sortCol]);
        var b = parseFloat(rows[y][sortCol]);
        a = isFinite(a) ? a : -Infinity;
        b = isFinite(b) ? b : -Infinity;
        return b - a || x - y;
      });
    }
    this.matches = out;
  };

  Table.prototype.cell = function (col, value) {
    var td = make("td", "k-" + col.kind);
    if (value === null || value === undefined) {
      td.appendChild(make("span", "null", "—"));
      return td;
    }
    var text = String(value);
    if (col.kind === "category") {
      var chip = make("span", "chip " + (this.catCss[text] || "cx"), (this.catLabel[text] || text).split(" / ")[0]);
      chip.title = text + (this.catLabel[text] ? " · " + this.catLabel[text] : "");
      td.appendChild(chip);
    } else if (col.kind === "status") {
      td.textContent = this.statuses[text] || text;
    } else if (col.kind === "cause") {
      td.textContent = this.causes[text] || text;
      td.title = text;
    } else if (col.kind === "field") {
      td.textContent = this.fields[text] ? this.fields[text] + " " + text : text;
    } else if (col.kind === "num") {
      td.textContent = typeof value === "number" ? fmt(value) : text;
    } else if (col.key === "case_id" && this.searchNode) {
      // A case's findings together: the case id becomes the search.
      var link = make("button", "case-link", text);
      link.type = "button";
      link.title = "显示同一案件的全部发现 · Show this case's findings";
      var self = this;
      link.addEventListener("click", function (ev) {
        ev.stopPropagation();
        self.searchNode.value = text;
        self.readControls();
        self.page = 0;
        self.filter();
        self.render();
        self.toHash();
      });
      td.appendChild(link);
    } else if (col.kind === "money") {
      td.textContent = money(value);
    } else if (col.kind === "decision") {
      td.textContent = this.decisions[text] || text;
    } else {
      td.textContent = text;
      if (text.length > 24) { td.title = text; }
    }
    return td;
  };

  Table.prototype.detail = function (row) {
    var tr = make("tr", "detail");
    var td = make("td");
    td.colSpan = this.main.length;
    var dl = make("dl");
    for (var i = 0; i < this.columns.length; i++) {
      var col = this.columns[i];
      var v = row[i];
      var shown = v === null || v === undefined ? "—" : col.kind === "money" ? money(v)
        : col.kind === "decision" ? (this.decisions[v] || String(v))
        : col.kind === "status" ? (this.statuses[v] || String(v)) : String(v);
      dl.appendChild(make("dt", null, col.zh + " " + col.en));
      dl.appendChild(make("dd", null, shown));
    }
    td.appendChild(dl);
    var lines = this.linesOf(row);
    if (lines) { td.appendChild(lines); }
    tr.appendChild(td);
    return tr;
  };

  // The invoice's lines (both sides), as the evidence under a finding.
  Table.prototype.linesOf = function (row) {
    var spec = this.data.lines;
    if (!spec || !spec.by_key || this.index.invoice_number === undefined) { return null; }
    var code = row[this.index.invoice_code];
    var number = row[this.index.invoice_number];
    var key = code ? code + "-" + number : number;
    var rows = Object.prototype.hasOwnProperty.call(spec.by_key, key) ? spec.by_key[key] : null;
    if (!rows || !rows.length) { return null; }
    var table = make("table", "lines");
    table.appendChild(make("caption", null, "明细行 · Lines (" + rows.length + ")"));
    var head = make("tr");
    for (var c = 0; c < spec.columns.length; c++) {
      head.appendChild(make("th", null, spec.columns[c].zh + " " + spec.columns[c].en));
    }
    var thead = make("thead");
    thead.appendChild(head);
    table.appendChild(thead);
    var body = make("tbody");
    for (var r = 0; r < rows.length; r++) {
      var tr = make("tr");
      for (var k = 0; k < rows[r].length; k++) { tr.appendChild(make("td", null, rows[r][k] === null ? "—" : rows[r][k])); }
      body.appendChild(tr);
    }
    table.appendChild(body);
    return table;
  };

  Table.prototype.render = function () {
    var pages = Math.max(1, Math.ceil(this.matches.length / PAGE_SIZE));
    if (this.page >= pages) { this.page = pages - 1; }
    if (this.page < 0) { this.page = 0; }
    var start = this.page * PAGE_SIZE;
    var end = Math.min(this.matches.length, start + PAGE_SIZE);
    var frag = document.createDocumentFragment();
    var self = this;
    for (var m = start; m < end; m++) {
      var row = this.rows[this.matches[m]];
      var tr = make("tr", "row");
      for (var i = 0; i < this.main.length; i++) {
        tr.appendChild(this.cell(this.columns[this.main[i]], row[this.main[i]]));
      }
      tr.addEventListener("click", (function (rowData) {
        return function () {
          var next = this.nextSibling;
          if (next && next.className === "detail") {
            next.parentNode.removeChild(next);
            this.classList.remove("open");
          } else {
            this.parentNode.insertBefore(self.detail(rowData), this.nextSibling);
            this.classList.add("open");
          }
        };
      })(row));
      frag.appendChild(tr);
    }
    if (end === start) {
      var empty = make("tr", "empty-row");
      var td = make("td", "empty", this.rows.length ? "没有匹配的记录 · No matching rows" : "无记录 · None");
      td.colSpan = this.main.length;
      empty.appendChild(td);
      frag.appendChild(empty);
    }
    while (this.tbody.firstChild) { this.tbody.removeChild(this.tbody.firstChild); }
    this.tbody.appendChild(frag);
    var total = this.data.total;
    var text = this.matches.length
      ? "显示第 " + fmt(start + 1) + "–" + fmt(end) + " 条，共 " + fmt(this.matches.length) + " 条匹配 · Showing " +
        fmt(start + 1) + "–" + fmt(end) + " of " + fmt(this.matches.length) + " matching rows"
      : "0 条匹配 · 0 matching rows";
    if (this.rows.length < total) {
      text += " (本页嵌入 " + fmt(this.rows.length) + " / " + fmt(total) + " · embedded " + fmt(this.rows.length) + " of " + fmt(total) + ")";
    }
    this.countNode.textContent = text;
    this.root.setAttribute("data-matching", String(this.matches.length));
    this.root.setAttribute("data-page", String(this.page + 1));
    this.pageNode.textContent = fmt(this.page + 1) + " / " + fmt(pages);
    var buttons = this.root.querySelectorAll("[data-action]");
    for (var b = 0; b < buttons.length; b++) {
      var a = buttons[b].getAttribute("data-action");
      if (a === "first" || a === "prev") { buttons[b].disabled = this.page === 0; }
      if (a === "next" || a === "last") { buttons[b].disabled = this.page >= pages - 1; }
    }
  };

  Table.prototype.bind = function () {
    var self = this;
    var timer = null;
    function changed() {
      self.readControls();
      self.page = 0;
      self.filter();
      self.render();
      self.toHash();
    }
    for (var i = 0; i < this.controls.length; i++) {
      var el = this.controls[i];
      if (el.tagName === "INPUT") {
        el.addEventListener("input", function () {
          if (timer) { window.clearTimeout(timer); }
          timer = window.setTimeout(changed, 150);
        });
      } else {
        el.addEventListener("change", changed);
      }
    }
    if (this.sortNode) { this.sortNode.addEventListener("change", changed); }
    var buttons = this.root.querySelectorAll("[data-action]");
    for (var b = 0; b < buttons.length; b++) {
      buttons[b].addEventListener("click", function (ev) {
        var action = ev.currentTarget.getAttribute("data-action");
        var pages = Math.max(1, Math.ceil(self.matches.length / PAGE_SIZE));
        if (action === "reset") {
          self.filters = {};
          self.writeControls();
          changed();
          return;
        }
        if (action === "first") { self.page = 0; }
        if (action === "prev") { self.page -= 1; }
        if (action === "next") { self.page += 1; }
        if (action === "last") { self.page = pages - 1; }
        self.render();
        self.toHash();
      });
    }
    if (this.useHash) {
      window.addEventListener("hashchange", function () {
        if (window.location.hash !== self.ownHash) { self.fromHash(); }
      });
    }
  };

  var roots = document.querySelectorAll(".ptable[data-source]");
  for (var t = 0; t < roots.length; t++) {
    var table = new Table(roots[t]);
    if (table.useHash) {
      table.fromHash();
    } else {
      table.filter();
      table.render();
    }
  }
  // Clicking a category row of the summary table shows its findings.
  var catRows = document.querySelectorAll("#categories-table tr[data-category]");
  for (var r = 0; r < catRows.length; r++) {
    catRows[r].addEventListener("click", function (ev) {
      window.location.hash = "cat=" + encodeURIComponent(ev.currentTarget.getAttribute("data-category"));
      var target = document.getElementById("findings");
      if (target) { target.scrollIntoView(); }
    });
  }
  document.documentElement.setAttribute("data-ready", "1");
})();
