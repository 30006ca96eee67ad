#include "serve/status_page.h"

namespace tcpkit::cli {

// Cells are filled with textContent, never innerHTML: chat names are typed
// by clients and must not become markup on the operator's screen.
std::string_view status_page_html() {
  static constexpr std::string_view kPage = R"html(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tcpkit serve: clients</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
  table { border-collapse: collapse; min-width: 40em; }
  th, td { border-bottom: 1px solid #ccc; padding: 0.3em 0.8em; text-align: left; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  #status { color: #666; }
</style>
</head>
<body>
<h1>tcpkit serve</h1>
<p id="status">loading&hellip;</p>
<table>
  <thead><tr><th>peer</th><th>name</th><th>connected since</th><th>bytes in</th><th>bytes out</th></tr></thead>
  <tbody id="clients"></tbody>
</table>
<p><a href="/metrics">/metrics</a> &middot; <a href="/clients.json">/clients.json</a></p>
<script>
"use strict";
function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
}
function render(data) {
  const body = document.getElementById("clients");
  const rows = [];
  for (const c of data.clients) {
    const tr = document.createElement("tr");
    tr.className = "client";
    cell(tr, c.peer);
    cell(tr, c.name);
    cell(tr, new Date(c.since).toLocaleString());
    cell(tr, String(c.bytes_in), "num");
    cell(tr, String(c.bytes_out), "num");
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  const shown = data.clients.length < data.open ? ` (showing ${data.clients.length})` : "";
  document.getElementById("status").textContent =
      `${data.open} connected${shown}, updated ${new Date().toLocaleTimeString()}`;
}
async function refresh() {
  try {
    const response = await fetch("/clients.json", {cache: "no-store"});
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
  } catch (e) {
    document.getElementById("status").textContent = `cannot reach the server: ${e.message}`;
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
)html";
  return kPage;
}

}  // namespace tcpkit::cli
