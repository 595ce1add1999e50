// convlens web app: the pages call the JSON and image endpoints under /api; every number
// shown comes from there (the page computes nothing). Each view element gets its numbers
// as data-numbers (JSON) and data-ready="1" once its image has loaded, for tests and tools.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, input: sessionStorage.getItem("convlens-input") || "index:0",
                label: sessionStorage.getItem("convlens-label") || "test example 0" };

function status(text, error) {
  const el = $("status");
  if (!el) return;
  el.textContent = text;
  el.className = error ? "error" : "";
}

async function getJSON(url) {
  const r = await fetch(url);
  const body = await r.json();
  if (!r.ok) throw new Error(body.detail || r.statusText);
  return body;
}

function q(params) {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") s.set(k, v);
  return s.toString();
}

function fill(select, values, labels) {
  select.replaceChildren(...values.map((v, i) => {
    const o = document.createElement("option");
    o.value = v; o.textContent = labels ? labels[i] : v;
    return o;
  }));
}

function setInput(spec, label) {
  state.input = spec; state.label = label;
  sessionStorage.setItem("convlens-input", spec);
  sessionStorage.setItem("convlens-label", label);
  const cur = $("current");
  if (cur) cur.textContent = label;
  refresh();
}

// A figure view: JSON (caption, alt text, numbers) first, then the PNG, with download links.
async function showView(key, endpoint, params, what) {
  const fig = $(key + "-figure"), img = $(key + "-img");
  fig.dataset.ready = "0";
  const query = q(params);
  const body = await getJSON(`${endpoint}?${query}&format=json`);
  fig.dataset.numbers = JSON.stringify(body);
  $(key + "-caption").textContent = body.caption || "";
  img.alt = body.alt || "";
  await new Promise((resolve) => {
    img.onload = img.onerror = resolve;
    img.src = `${endpoint}?${query}&format=png`;
  });
  const links = $(key + "-downloads");
  links.replaceChildren(...[["png", "PNG"], ["svg", "SVG"], ["txt", "alt text"]].map(([fmt, name]) => {
    const a = document.createElement("a");
    a.href = `${endpoint}?${query}&format=${fmt}&download=true`;
    a.textContent = `Download ${name}`;
    a.setAttribute("aria-label", `Download ${name} of the ${what}`);
    a.setAttribute("download", "");
    return a;
  }));
  fig.dataset.ready = "1";
  return body;
}

async function showPrediction() {
  const body = await getJSON(`/api/predict?${q({ input: state.input })}`);
  const table = $("prediction");
  table.dataset.numbers = JSON.stringify(body);
  table.querySelector("tbody").replaceChildren(...body.top.map((t) => {
    const tr = document.createElement("tr");
    tr.dataset.class = t.class;
    tr.dataset.p = t.p;
    const th = document.createElement("th");
    th.scope = "row"; th.className = "text"; th.textContent = t.name;
    const td = document.createElement("td");
    td.textContent = (100 * t.p).toFixed(2) + " %";
    tr.append(th, td);
    return tr;
  }));
  table.dataset.ready = "1";
}

async function showCam() {
  const method = $("cam-method").value;
  const needs = state.info.methods.find((m) => m.name === method).needs_layer;
  $("cam-layer").disabled = !needs;
  const params = { input: state.input, method, layer: needs ? $("cam-layer").value : "" };
  const table = $("cam-scores");
  table.dataset.ready = "0";
  const view = await showView("cam", "/api/cam", params, "heatmap");
  const s = view.scores;
  const rows = [["deletion AUC (lower is better)", s.deletion_auc.toFixed(3)],
                ["insertion AUC (higher is better)", s.insertion_auc.toFixed(3)],
                ["Average Drop % (lower is better)", s.average_drop.toFixed(1)],
                ["Increase in Confidence % (higher is better)", s.increase_in_confidence.toFixed(1)]];
  table.querySelector("tbody").replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row"; th.className = "text"; th.textContent = k;
    const td = document.createElement("td");
    td.textContent = v;
    tr.append(th, td);
    return tr;
  }));
  table.dataset.numbers = JSON.stringify(s);
  table.dataset.ready = "1";
}

function grid(table, values, inImage) {
  table.querySelector("tbody").replaceChildren(...values.map((row, a) => {
    const tr = document.createElement("tr");
    row.forEach((v, b) => {
      const td = document.createElement("td");
      td.textContent = v.toFixed(3);
      if (inImage && !inImage[a][b]) { td.className = "pad"; td.title = "padding"; }
      tr.append(td);
    });
    return tr;
  }));
}

function drawOutput(canvas, output, pos) {
  const h = output.length, w = output[0].length, ctx = canvas.getContext("2d");
  canvas.width = w; canvas.height = h;
  canvas.style.width = Math.min(280, 10 * w) + "px";
  canvas.style.height = Math.min(280, 10 * w) * h / w + "px";
  let m = 0;
  for (const row of output) for (const v of row) m = Math.max(m, Math.abs(v));
  const img = ctx.createImageData(w, h);
  output.forEach((row, i) => row.forEach((v, j) => {
    const t = m ? v / m : 0, k = 4 * (i * w + j);   // blue (negative) - white - orange (positive)
    img.data[k] = t < 0 ? 255 * (1 + t) : 255;
    img.data[k + 1] = t < 0 ? 255 * (1 + 0.5 * t) : 255 * (1 - 0.45 * t);
    img.data[k + 2] = t < 0 ? 255 : 255 * (1 - t);
    img.data[k + 3] = 255;
  }));
  ctx.putImageData(img, 0, 0);
  ctx.strokeStyle = "#000"; ctx.lineWidth = 0.3;
  ctx.strokeRect(pos[1], pos[0], 1, 1);
}

// What the conv controls say now ({row: "", col: ""} in ``at``: explain the strongest output).
// Read when the user acts, so an answer still on its way (which writes the controls back)
// cannot change what the user asked for next.
function convAsked(at) {
  const pos = at || { row: $("conv-row").value, col: $("conv-col").value };
  const params = { input: state.input, channel: $("conv-channel").value, stride: $("conv-stride").value,
                   padding: $("conv-padding").value, dilation: $("conv-dilation").value, row: pos.row, col: pos.col };
  if (params.row === "" || params.col === "") { params.row = ""; params.col = ""; }
  return params;
}

async function showConv(asked) {
  const params = asked || convAsked();
  const body = await showView("conv", "/api/conv", params, "worked-out convolution");
  const [i, j] = body.position, [ho, wo] = body.output_shape;
  $("conv-stride").value = body.stride[0]; $("conv-padding").value = body.pad[0];
  $("conv-dilation").value = body.dilation[0]; $("conv-row").value = i; $("conv-col").value = j;
  $("conv-row").max = ho - 1; $("conv-col").max = wo - 1;
  $("conv-size").textContent = `Output size: ${ho}×${wo} (stride ${body.stride[0]}, padding ${body.pad[0]}, dilation ${body.dilation[0]}).`;
  $("conv-size").dataset.shape = JSON.stringify(body.output_shape);
  $("conv-sum").textContent = `out[${i}, ${j}] = Σ ${body.products.flat(2).length} products + bias = ` +
    `${body.sum.toFixed(4)} + ${body.bias.toFixed(4)} = ${body.total.toFixed(4)}`;
  grid($("conv-patch"), body.patch[0], body.in_image);
  grid($("conv-kernel"), body.kernel[0]);
  grid($("conv-products"), body.products[0], body.in_image);
  drawOutput($("grid"), body.output, body.position);
}

async function showResults() {
  const found = await getJSON("/api/results");
  $("results-none").hidden = found.length > 0;
  $("results").replaceChildren(...found.map((r) => {
    const sec = document.createElement("section");
    const h = document.createElement("h2");
    h.textContent = r.title;
    sec.append(h);
    r.figures.forEach((f) => {
      const fig = document.createElement("figure");
      const img = document.createElement("img");
      img.src = `/api/results/${encodeURIComponent(r.key)}/${f.n}`;
      img.alt = f.alt;
      const cap = document.createElement("figcaption");
      cap.textContent = f.caption;
      const a = document.createElement("a");
      a.href = img.src + "?download=true";
      a.textContent = "Download PNG";
      a.setAttribute("aria-label", `Download PNG of ${f.stem}`);
      fig.append(img, cap, a);
      sec.append(fig);
    });
    return sec;
  }));
}

// Refreshes run one after another, in the order the user asked for them, so a slow answer
// never overwrites a later one.
let queue = Promise.resolve();
function later(fn) {
  queue = queue.then(fn).catch((e) => status(e.message, true));
  return queue;
}
const refresh = () => later(refreshNow);

async function refreshNow() {
  const page = document.body.dataset.page;
  try {
    status("Working…");
    if (page === "explore") {
      await Promise.all([showPrediction(),
        showView("maps", "/api/maps", { input: state.input, layer: $("maps-layer").value, stage: $("maps-stage").value }, "feature maps"),
        showCam()]);
    } else if (page === "conv") {
      await showConv();
    }
    status("");
  } catch (e) {
    status(e.message, true);
  }
}

function pad() {
  const canvas = $("pad"), ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  ctx.strokeStyle = "#fff"; ctx.lineWidth = 22; ctx.lineCap = "round"; ctx.lineJoin = "round";
  let last = null;
  const at = (e) => { const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height]; };
  canvas.addEventListener("pointerdown", (e) => { canvas.setPointerCapture(e.pointerId); last = at(e);
    ctx.beginPath(); ctx.arc(last[0], last[1], ctx.lineWidth / 2, 0, 2 * Math.PI); ctx.fillStyle = "#fff"; ctx.fill(); });
  canvas.addEventListener("pointermove", (e) => { if (!last) return; const p = at(e);
    ctx.beginPath(); ctx.moveTo(...last); ctx.lineTo(...p); ctx.stroke(); last = p; });
  const end = () => { last = null; };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", clear);
  $("use-drawing").addEventListener("click", () => canvas.toBlob((blob) => upload(blob, "drawing"), "image/png"));
}

async function upload(blob, name) {
  try {
    status("Uploading…");
    const r = await fetch(`/api/upload?${q({ name })}`, { method: "POST", body: blob,
                                                         headers: { "Content-Type": "application/octet-stream" } });
    const body = await r.json();
    if (!r.ok) throw new Error(body.detail || r.statusText);
    setInput(body.input, body.label);
  } catch (e) {
    status(e.message, true);
  }
}

async function start() {
  state.info = await getJSON("/api/info");
  const info = state.info;
  $("model").textContent = `${info.model}${info.run ? " (run " + info.run + ")" : ""}: ${info.input_shape.join("×")} inputs, ${info.classes.length} classes`;
  const page = document.body.dataset.page;
  if (page === "results") return showResults();
  fill($("class"), info.classes);
  $("index").max = info.test_size - 1;
  $("use-class").addEventListener("click", () => setInput(`digit:${$("class").value}:${$("nth").value || 0}`,
    `test example of class ${$("class").value} (number ${$("nth").value || 0})`));
  $("use-index").addEventListener("click", () => setInput(`index:${$("index").value || 0}`, `test example ${$("index").value || 0}`));
  $("current").textContent = state.label;
  if (page === "explore") {
    fill($("maps-layer"), info.layers);
    fill($("filters-layer"), info.convs);
    fill($("cam-method"), info.methods.map((m) => m.name), info.methods.map((m) => m.title));
    fill($("cam-layer"), ["", ...info.layers], ["default (the deepest map)", ...info.layers]);
    for (const id of ["maps-layer", "maps-stage"]) $(id).addEventListener("change", () => later(() =>
      showView("maps", "/api/maps", { input: state.input, layer: $("maps-layer").value, stage: $("maps-stage").value }, "feature maps")));
    const filters = () => later(() => showView("filters", "/api/filters", { layer: $("filters-layer").value }, "filters"));
    $("filters-layer").addEventListener("change", filters);
    for (const id of ["cam-method", "cam-layer"]) $(id).addEventListener("change", () => later(showCam));
    $("use-file").addEventListener("click", () => { const f = $("file").files[0];
      if (f) upload(f, "upload"); else status("Choose an image file first.", true); });
    pad();
    filters();
  } else if (page === "conv") {
    const channels = Array.from({ length: info.first_conv_channels }, (_, i) => String(i));
    fill($("conv-channel"), channels, channels.map((c) => `${info.first_conv}:${c}`));
    $("conv-about").textContent = `The model's own first conv layer, ${info.first_conv}, on the chosen input (normalised as in training).`;
    // a new filter or geometry explains its strongest output again (the old position may not exist)
    for (const id of ["conv-channel", "conv-stride", "conv-padding", "conv-dilation"])
      $(id).addEventListener("change", () => { const asked = convAsked({ row: "", col: "" }); later(() => showConv(asked)); });
    for (const id of ["conv-row", "conv-col"]) $(id).addEventListener("change", () => {
      const asked = convAsked(); later(() => showConv(asked)); });
    $("grid").addEventListener("click", (e) => { const c = $("grid"), r = c.getBoundingClientRect();
      const at = { row: Math.floor((e.clientY - r.top) * c.height / r.height),
                   col: Math.floor((e.clientX - r.left) * c.width / r.width) };
      $("conv-row").value = at.row; $("conv-col").value = at.col;
      const asked = convAsked(at); later(() => showConv(asked)); });
  }
  refresh();
}

document.addEventListener("DOMContentLoaded", () => start().catch((e) => status(e.message, true)));
