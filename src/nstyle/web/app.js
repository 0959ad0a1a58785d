// nstyle serve: the page. Plain JavaScript, no library, nothing from another host.
// The server is the one home of every rule: settings are checked by POST /api/check (the
// command line's own checks and messages), uploads by POST /api/uploads.
"use strict";

const $ = (id) => document.getElementById(id);
const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"];
const TERMS = { loss: "#222", content: "#2a7ab0", style: "#c0392b", tv: "#8e7cc3" };
const FIELDS = ["size", "style_strength", "preserve_colors", "palette_layout", "style_scale", "model", "seed", "iterations"];

const state = {
  options: null,
  photo: null,        // {id, name, width, height}
  paintings: [],      // [{id, name, weight}]
  labels: null,       // Uint8Array: 0 none, k+1 painting k (the masks being painted)
  maskIds: null,      // masks of a past run, until they are painted over
  watching: null,     // the run shown on the stage
  follow: true,       // the stage follows the running run
  running: null,      // the running run's id
  runs: new Map(),    // history records by id
  history: [],        // the watched run's loss terms by iteration
  total: 0,
  preview: { want: 0, shown: 0, loading: false, run: null },
};

// --- small helpers --------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;  // CSSOM: allowed by the page's CSP, a style attribute is not
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "";
  s = Math.round(s);
  return s >= 60 ? `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}` : `${s}s`;
}

function fmt(x) {
  if (x === null || x === undefined) return "";
  return Math.abs(x) >= 100 ? x.toFixed(0) : Number(x.toPrecision(3)).toString();
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const error = new Error(body && body.error ? body.error : `the server answered ${response.status}`);
    error.field = body && body.field;
    throw error;
  }
  return body;
}

// A run's record, unless the one held is further on: an event can overtake the answer to a
// request made before it (queued < running < ended).
function keep(r) {
  const rank = (x) => (x.status === "queued" ? 0 : x.status === "running" ? 1 : 2);
  const held = state.runs.get(r.id);
  if (!held || rank(r) >= rank(held)) state.runs.set(r.id, r);
}

function say(text, field = null) {
  const box = $("message");
  box.textContent = text || "";
  box.className = text ? "error" : "";
  for (const name of FIELDS) $(name).removeAttribute("aria-invalid");
  if (field && $(field)) $(field).setAttribute("aria-invalid", "true");
}

// A number where the text is one, else the text itself: the server says what is wrong.
function value(text) {
  text = text.trim();
  if (text === "") return null;
  return /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text) ? Number(text) : text;
}

function values(text) {
  const parts = text.trim().split(/[\s,]+/).filter(Boolean).map(value);
  return parts.length === 0 ? null : parts.length === 1 ? parts[0] : parts;
}

// --- uploads ---------------------------------------------------------------------------

async function upload(file) {
  const limit = state.options.limits.upload_bytes;
  if (file.size > limit) {
    const mb = (n) => `${Math.round(n / 1048576)} MB`;
    throw new Error(`'${file.name}' is ${mb(file.size)}; the limit is ${mb(limit)}`);
  }
  return api("/api/uploads", { method: "POST", body: file, headers: { "X-File-Name": encodeURIComponent(file.name) } });
}

async function addPhoto(file) {
  showPhoto({ local: URL.createObjectURL(file), name: file.name });
  try {
    setPhoto(await upload(file));
    say("");
  } catch (e) {
    setPhoto(null);
    say(e.message);
  }
}

async function addPaintings(files) {
  for (const file of files) {
    if (state.paintings.length >= state.options.limits.styles) {
      say(`at most ${state.options.limits.styles} paintings`);
      return;
    }
    try {
      const up = await upload(file);
      state.paintings.push({ id: up.id, name: up.name, weight: 1 });
      say("");
    } catch (e) {
      say(e.message);
    }
  }
  paintingsChanged();
}

function setPhoto(up) {
  state.photo = up;
  state.labels = up ? new Uint8Array(maskSize(up).w * maskSize(up).h) : null;
  state.maskIds = null;
  showPhoto(up ? { url: `/api/uploads/${up.id}/view.jpg`, name: up.name } : null);
  check();
}

function showPhoto(photo) {
  const slot = $("photo-slot");
  slot.replaceChildren();
  slot.classList.toggle("empty", !photo);
  $("mask-tools").hidden = !photo || !photo.url;
  if (!photo) {
    slot.textContent = "Drop a photo here";
    return;
  }
  const img = el("img", { src: photo.url || photo.local, alt: photo.name, id: "photo-img" });
  slot.append(el("div", { class: "mask-wrap" }, img, photo.url ? maskCanvas() : null),
              el("div", { class: "caption" }, photo.name, photo.url ? null : " (uploading…)"));
  drawMask();
}

function paintingsChanged() {
  const list = $("style-list");
  list.replaceChildren();
  state.paintings.forEach((p, k) => {
    const weight = el("input", { class: "weight", inputmode: "decimal", value: String(p.weight), "aria-label": `Blend weight of ${p.name}`,
                                 title: "blend weight", oninput: (e) => { p.weight = value(e.target.value); check(); } });
    list.append(el("div", { class: "painting", "data-id": p.id },
      el("img", { src: `/api/uploads/${p.id}/view.jpg`, alt: p.name }),
      el("span", { class: "swatch", style: `background:${COLOURS[k % COLOURS.length]}`, title: "its colour when painting masks" }),
      el("span", { class: "name" }, p.name),
      state.paintings.length > 1 ? el("label", { class: "inline" }, "blend ", weight) : null,
      el("button", { type: "button", class: "small remove", title: `Remove ${p.name}`, "aria-label": `Remove ${p.name}`,
                     onclick: () => { removePainting(k); } }, "×")));
  });
  $("style-slot").textContent = state.paintings.length ? "Drop more paintings to blend them" : "Drop one or more paintings here";
  brushes();
  check();
}

function removePainting(k) {
  state.paintings.splice(k, 1);
  if (state.labels) {  // painting k's strokes go; later paintings move down one
    for (let i = 0; i < state.labels.length; i++) {
      const v = state.labels[i];
      state.labels[i] = v === k + 1 ? 0 : v > k + 1 ? v - 1 : v;
    }
  }
  state.maskIds = null;
  paintingsChanged();
  drawMask();
}

function setupDrop(zone, onFiles) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) onFiles([...e.dataTransfer.files]);
  });
}

// --- masks: painted on the photo, one colour per painting ------------------------------

let brush = 1;  // 1 + the painting painted with; 0 erases

function maskSize(photo) {
  const scale = Math.min(1, 512 / Math.max(photo.width, photo.height));
  return { w: Math.max(1, Math.round(photo.width * scale)), h: Math.max(1, Math.round(photo.height * scale)) };
}

function maskCanvas() {
  const { w, h } = maskSize(state.photo);
  const canvas = el("canvas", { id: "mask-canvas", width: w, height: h, class: $("mask-on").checked ? "on" : "" });
  let down = false, last = null;
  const at = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * w / r.width, (e.clientY - r.top) * h / r.height];
  };
  const paint = (e) => {
    const p = at(e);
    const from = last || p;
    const steps = Math.max(1, Math.ceil(Math.hypot(p[0] - from[0], p[1] - from[1]) / 2));
    for (let s = 1; s <= steps; s++) stamp(from[0] + (p[0] - from[0]) * s / steps, from[1] + (p[1] - from[1]) * s / steps);
    last = p;
    drawMask();
  };
  canvas.addEventListener("pointerdown", (e) => {
    if (!$("mask-on").checked) return;
    down = true; last = null; canvas.setPointerCapture(e.pointerId); state.maskIds = null; paint(e);
  });
  canvas.addEventListener("pointermove", (e) => { if (down) paint(e); });
  canvas.addEventListener("pointerup", () => { down = false; last = null; });
  return canvas;
}

function stamp(cx, cy) {
  const { w, h } = maskSize(state.photo);
  const r = Number($("brush-size").value) * Math.max(w, h) / 512 / 2;
  for (let y = Math.max(0, Math.floor(cy - r)); y <= Math.min(h - 1, Math.ceil(cy + r)); y++) {
    for (let x = Math.max(0, Math.floor(cx - r)); x <= Math.min(w - 1, Math.ceil(cx + r)); x++) {
      if ((x - cx) ** 2 + (y - cy) ** 2 <= r * r) state.labels[y * w + x] = brush;
    }
  }
}

function drawMask() {
  const canvas = $("mask-canvas");
  if (!canvas || !state.labels) return;
  const { w, h } = maskSize(state.photo);
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  const rgb = COLOURS.map((c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)));
  for (let i = 0; i < state.labels.length; i++) {
    const v = state.labels[i];
    if (v) image.data.set([...rgb[(v - 1) % rgb.length], 120], i * 4);
  }
  ctx.putImageData(image, 0, 0);
}

function brushes() {
  const box = $("mask-brushes");
  box.replaceChildren();
  const pick = (k) => { brush = k; brushes(); };
  state.paintings.forEach((p, k) => box.append(el("button", {
    type: "button", class: "small brush" + (brush === k + 1 ? " on" : ""), title: `Paint where ${p.name} goes`,
    style: `border-color:${COLOURS[k % COLOURS.length]}`, onclick: () => pick(k + 1) },
    el("span", { class: "swatch", style: `background:${COLOURS[k % COLOURS.length]}` }), ` ${p.name}`)));
  box.append(el("button", { type: "button", class: "small brush" + (brush === 0 ? " on" : ""), onclick: () => pick(0) }, "eraser"));
  if (brush > state.paintings.length) brush = state.paintings.length ? 1 : 0;
}

function painted() {
  return state.labels && state.labels.some((v) => v > 0 && v <= state.paintings.length);
}

// The painted masks as PNGs, uploaded: white where that painting goes, black elsewhere.
async function uploadMasks() {
  if (state.maskIds && state.maskIds.length === state.paintings.length) return state.maskIds;
  if (!painted()) return null;
  const { w, h } = maskSize(state.photo);
  const canvas = el("canvas", { width: w, height: h });
  const ctx = canvas.getContext("2d");
  const ids = [];
  for (let k = 0; k < state.paintings.length; k++) {
    const image = ctx.createImageData(w, h);
    for (let i = 0; i < state.labels.length; i++) {
      const v = state.labels[i] === k + 1 ? 255 : 0;
      image.data.set([v, v, v, 255], i * 4);
    }
    ctx.putImageData(image, 0, 0);
    const blob = await new Promise((done) => canvas.toBlob(done, "image/png"));
    ids.push((await upload(new File([blob], `mask-${k + 1}.png`, { type: "image/png" }))).id);
  }
  return ids;
}

// A past run's masks back into the brush strokes (from their pictures, thresholded).
async function loadMasks(ids) {
  const { w, h } = maskSize(state.photo);
  const canvas = el("canvas", { width: w, height: h });
  const ctx = canvas.getContext("2d");
  for (let k = 0; k < ids.length; k++) {
    const img = new Image();
    img.src = `/api/uploads/${ids[k]}/view.jpg`;
    try { await img.decode(); } catch (e) { continue; }
    ctx.drawImage(img, 0, 0, w, h);
    const data = ctx.getImageData(0, 0, w, h).data;
    for (let i = 0; i < state.labels.length; i++) if (data[i * 4] > 127) state.labels[i] = k + 1;
  }
  state.maskIds = ids;
  drawMask();
}

// --- settings --------------------------------------------------------------------------

function settings() {
  const weights = state.paintings.map((p) => p.weight);
  return {
    size: value($("size").value),
    style_strength: value($("style_strength").value),
    preserve_colors: $("preserve_colors").value,
    palette_layout: value($("palette_layout").value),
    style_scale: values($("style_scale").value),
    style_weights: weights.length > 1 && weights.some((w) => w !== 1) ? weights : null,
    model: $("model").value,
    seed: value($("seed").value),
    iterations: values($("iterations").value),
  };
}

function fillSettings(s) {
  const d = state.options.defaults;
  const text = (v) => (v === null || v === undefined ? "" : Array.isArray(v) ? v.join(" ") : String(v));
  $("size").value = text(s.size ?? d.size);
  $("style_strength").value = text(s.style_strength ?? d.style_strength);
  $("strength-range").value = $("style_strength").value;
  $("preserve_colors").value = s.preserve_colors ?? d.preserve_colors;
  $("palette_layout").value = text(s.palette_layout ?? d.palette_layout);
  $("style_scale").value = text(s.style_scale ?? d.style_scale);
  $("model").value = s.model ?? d.model;
  $("seed").value = text(s.seed ?? d.seed);
  $("iterations").value = text(s.iterations);
}

let checkTimer = null;
function check() {
  clearTimeout(checkTimer);
  checkTimer = setTimeout(async () => {
    try {
      const r = await api("/api/check", { method: "POST", headers: { "Content-Type": "application/json" },
                                          body: JSON.stringify({ settings: settings(), styles: state.paintings.length || null }) });
      $("schedule").textContent = r.schedule;
      if ($("message").dataset.kind === "setting") { say(""); delete $("message").dataset.kind; }
    } catch (e) {
      $("schedule").textContent = "";
      say(e.message, e.field);
      $("message").dataset.kind = "setting";
    }
  }, 200);
}

async function start() {
  say("");
  if (!state.photo) return say("add a photo first");
  if (!state.paintings.length) return say("add at least one painting");
  $("start").disabled = true;
  try {
    const masks = await uploadMasks();
    const record = await api("/api/runs", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ content: state.photo.id, styles: state.paintings.map((p) => p.id), masks, settings: settings() }),
    });
    keep(record);
    renderHistory();
    state.follow = true;
    if (!state.running) watch(record.id);
  } catch (e) {
    say(e.message, e.field);
  } finally {
    $("start").disabled = false;
  }
}

// "Run again with changes": a past run's inputs and settings back into the form.
async function again(id) {
  const r = state.runs.get(id);
  if (!r) return;
  fillSettings(r.settings);
  state.paintings = r.inputs.styles.map((s, k) => ({ id: s.id, name: s.name,
    weight: r.settings.style_weights ? r.settings.style_weights[k] : 1 }));
  try {
    const photo = await api(`/api/uploads/${r.inputs.content.id}`);
    setPhoto(photo);
  } catch (e) {
    setPhoto({ id: r.inputs.content.id, name: r.inputs.content.name, width: 512, height: 384 });
  }
  paintingsChanged();
  if (r.inputs.masks) await loadMasks(r.inputs.masks);
  say("");
  $("make").scrollIntoView({ behavior: "smooth" });
  $("note").textContent = "The form holds that run's photo, paintings and settings: change what you like and press Start.";
}

// --- the stage: the run being watched ---------------------------------------------------

function watch(id, follow = state.follow) {
  state.follow = follow;
  if (state.watching === id) return;
  state.watching = id;
  state.history = [];
  state.total = 0;
  state.preview = { want: 0, shown: 0, loading: false, run: id };
  $("preview").removeAttribute("src");
  $("note").textContent = "";
  renderStage();
  api(`/api/runs/${id}/history`).then((rows) => {
    if (state.watching !== id) return;
    if (rows.length && (!state.history.length || rows[rows.length - 1].step >= state.history[state.history.length - 1].step)) {
      state.history = rows;
    }
    drawPlot();
  }).catch(() => {});
  const r = state.runs.get(id);
  if (r && !["queued", "running"].includes(r.status)) showFinal(r);
}

function renderStage() {
  const id = state.watching;
  const r = id && state.runs.get(id);
  const live = id && id === state.running;
  $("placeholder").hidden = !!id;
  $("stop").disabled = !(r && (live || r.status === "queued"));
  $("stop").textContent = r && r.status === "queued" ? "Cancel" : "Stop";
  const download = $("download");
  if (r && r.output && !live) {
    download.href = `/api/runs/${id}/output.png`;
    download.classList.remove("disabled");
    download.removeAttribute("aria-disabled");
  } else {
    download.removeAttribute("href");
    download.classList.add("disabled");
    download.setAttribute("aria-disabled", "true");
  }
  $("again").disabled = !r;
  if (r && !live && r.status !== "queued") {
    const p = r.result || {};
    const what = r.status === "done" ? `done: ${p.steps} iterations in ${duration(p.seconds)}` :
                 `${r.status}${r.message ? ": " + r.message : ""}`;
    $("status").textContent = `${title(r)} · ${what}`;
    $("status").className = r.status === "failed" ? "error" : "";
    setBar(r.status === "done" ? 1 : p.steps && p.total ? p.steps / p.total : 0);
  } else if (r && r.status === "queued") {
    $("status").textContent = `${title(r)} · waiting in the queue`;
    $("status").className = "";
    setBar(0);
  }
}

function setBar(fraction) {
  const pct = Math.round(Math.max(0, Math.min(1, fraction)) * 1000) / 10;
  $("bar-fill").style.width = `${pct}%`;
  $("bar").setAttribute("aria-valuenow", String(pct));
}

function onProgress(d) {
  if (d.run !== state.watching) return;
  const p = d.progress;
  state.total = p.total;
  state.history.push({ step: p.step, loss: p.loss, ...p.terms });
  setBar(p.fraction);
  const where = p.scales > 1 ? `scale ${p.scale}/${p.scales} · ${p.size[1]}×${p.size[0]} · ` : `${p.size[1]}×${p.size[0]} · `;
  const tile = p.tiles ? `tile ${p.tile}/${p.tiles} · ` : "";
  const left = d.left === null ? "estimating time left" : `${duration(d.left)} left`;
  $("status").textContent = `${where}${tile}iteration ${p.step} of ${p.total} · ${duration(p.elapsed)} elapsed · ${left}`;
  $("status").className = "";
  document.title = `${Math.round(p.fraction * 100)}% · nstyle`;
  schedulePlot();
}

// Previews: the next is fetched only once the last has loaded, so a slow page skips some.
function wantPreview(id, step) {
  if (id !== state.watching) return;
  state.preview.want = Math.max(state.preview.want, step);
  pumpPreview();
}

function pumpPreview() {
  const pv = state.preview;
  if (pv.loading || pv.want <= pv.shown) return;
  pv.loading = true;
  const step = pv.want, run = pv.run;
  const img = new Image();
  img.onload = () => {
    if (state.preview !== pv) return;
    $("preview").src = img.src;
    $("preview").dataset.step = String(step);
    pv.shown = step;
    pv.loading = false;
    pumpPreview();
  };
  img.onerror = () => { pv.loading = false; };
  img.src = `/api/runs/${run}/preview.jpg?step=${step}`;
}

function showFinal(r) {
  if (r.output) {
    const img = new Image();
    img.onload = () => { if (state.watching === r.id) { $("preview").src = img.src; $("preview").dataset.step = "final"; } };
    img.src = `/api/runs/${r.id}/preview.jpg?final=${r.finished}`;
  }
  document.title = "nstyle";
  renderStage();
}

let plotQueued = false;
function schedulePlot() {
  if (plotQueued) return;
  plotQueued = true;
  requestAnimationFrame(() => { plotQueued = false; drawPlot(); });
}

// The loss terms on a log scale by iteration.
function drawPlot() {
  const canvas = $("plot");
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, pad = 28;
  ctx.clearRect(0, 0, W, H);
  const rows = state.history;
  const legend = $("legend");
  legend.replaceChildren();
  canvas.dataset.points = String(rows.length);
  if (!rows.length) return;
  const names = Object.keys(TERMS).filter((k) => rows.some((r) => r[k] > 0));
  let lo = Infinity, hi = -Infinity;
  for (const r of rows) for (const k of names) if (r[k] > 0) { lo = Math.min(lo, Math.log10(r[k])); hi = Math.max(hi, Math.log10(r[k])); }
  if (hi - lo < 1e-6) { hi += 0.5; lo -= 0.5; }
  const steps = Math.max(state.total, rows[rows.length - 1].step, 2);
  const x = (s) => pad + (W - pad - 6) * (s - 1) / (steps - 1);
  const y = (v) => 6 + (H - 6 - pad / 2) * (hi - Math.log10(v)) / (hi - lo);
  ctx.strokeStyle = "#ddd"; ctx.fillStyle = "#888"; ctx.font = "10px sans-serif"; ctx.lineWidth = 1;
  for (let e = Math.ceil(lo); e <= Math.floor(hi); e++) {
    ctx.beginPath(); ctx.moveTo(pad, y(10 ** e)); ctx.lineTo(W - 6, y(10 ** e)); ctx.stroke();
    ctx.fillText(`1e${e}`, 2, y(10 ** e) + 3);
  }
  for (const k of names) {
    ctx.strokeStyle = TERMS[k]; ctx.lineWidth = k === "loss" ? 2 : 1.25;
    ctx.beginPath();
    let moved = false;
    for (const r of rows) {
      if (!(r[k] > 0)) continue;
      if (moved) ctx.lineTo(x(r.step), y(r[k])); else { ctx.moveTo(x(r.step), y(r[k])); moved = true; }
    }
    ctx.stroke();
    const lastRow = rows[rows.length - 1];
    legend.append(el("span", { class: "key" }, el("span", { class: "swatch", style: `background:${TERMS[k]}` }),
                     ` ${k === "loss" ? "total" : k} ${fmt(lastRow[k])}`));
  }
}

// --- queue and history ------------------------------------------------------------------

function title(r) {
  const stem = (n) => n.replace(/\.[^.]*$/, "");
  return `${stem(r.inputs.content.name)} × ${r.inputs.styles.map((s) => stem(s.name)).join(" + ")}`;
}

function summary(r) {
  const s = r.settings, out = r.result || {};
  const parts = [`${s.size} px`, `strength ${s.style_strength}`];
  if (s.preserve_colors !== "none") parts.push(`colours ${s.preserve_colors}`);
  if (s.palette_layout !== undefined && s.palette_layout !== state.options.defaults.palette_layout) parts.push(`colour places ${s.palette_layout}`);
  if (String(s.style_scale) !== "1") parts.push(`scale ${[].concat(s.style_scale).join(" ")}`);
  if (s.style_weights) parts.push(`blend ${s.style_weights.join(" ")}`);
  if (r.inputs.masks) parts.push("masks");
  if (s.iterations) parts.push(`iterations ${[].concat(s.iterations).join(" ")}`);
  parts.push(`seed ${s.seed}`, out.model || s.model);
  if (out.seconds) parts.push(duration(out.seconds));
  return parts.join(" · ");
}

function renderQueue(active) {
  state.running = active.running ? active.running.id : null;
  const list = $("queue");
  list.replaceChildren();
  const r = active.running;
  if (r) {
    const rec = state.runs.get(r.id);
    list.append(el("li", { class: "running", "data-id": r.id }, el("span", { class: "tag" }, "running"),
      el("button", { type: "button", class: "link", onclick: () => watch(r.id, true) }, rec ? title(rec) : "a run"),
      `${r.left !== null ? ` · ${duration(r.left)} left` : ""}${r.stopping ? " · stopping" : ""} `,
      el("button", { type: "button", class: "small", onclick: () => stopRun(r.id) }, "Stop")));
  }
  let wait = r && r.left !== null ? r.left : null;
  for (const q of active.queue) {
    const rec = state.runs.get(q.id);
    const eta = wait === null ? "" : ` · starts in about ${duration(wait)}`;
    if (wait !== null && q.takes !== null) wait += q.takes; else wait = null;
    list.append(el("li", { class: "queued", "data-id": q.id },
      el("span", { class: "tag" }, `#${q.position} in queue`), el("button", { type: "button", class: "link", onclick: () => watch(q.id, false) }, rec ? title(rec) : "a run"),
      `${eta}${q.takes !== null ? ` · takes about ${duration(q.takes)}` : ""} `,
      el("button", { type: "button", class: "small", onclick: () => stopRun(q.id) }, "Cancel")));
  }
  if (!r && !active.queue.length) list.append(el("li", { class: "hint" }, "Nothing running."));
  $("start").textContent = r ? "Add to queue" : "Start";
  if (r && (state.follow || !state.watching)) watch(r.id);
  if (r && r.id === state.watching) {
    if (r.preview_step) wantPreview(r.id, r.preview_step);
    if (r.progress && r.history && !state.history.length) {  // a page that comes back: the run so far
      state.history = r.history.slice(0, -1);
      onProgress({ run: r.id, progress: r.progress, left: r.left });
    }
    if (r.stopping) $("note").textContent = "stopping…";
  }
  renderStage();
}

function renderHistory() {
  const box = $("runs");
  box.replaceChildren();
  const runs = [...state.runs.values()].sort((a, b) => b.created - a.created);
  if (!runs.length) box.append(el("p", { class: "hint" }, "No runs yet."));
  for (const r of runs) {
    const del = el("button", { type: "button", class: "small danger", onclick: () => {
      if (del.dataset.sure) return removeRun(r.id);
      del.dataset.sure = "1"; del.textContent = "Delete for good?";
      setTimeout(() => { delete del.dataset.sure; del.textContent = "Delete"; }, 4000);
    } }, "Delete");
    const thumb = r.output ? el("img", { src: `/api/runs/${r.id}/thumb.jpg?f=${r.finished}`, alt: title(r), loading: "lazy" })
                           : el("div", { class: "no-thumb" }, r.status);
    box.append(el("article", { class: `run ${r.status}`, "data-id": r.id, "data-status": r.status },
      el("button", { type: "button", class: "thumb", onclick: () => watch(r.id, false), title: "Show it" }, thumb),
      el("div", { class: "meta" },
        el("div", { class: "title" }, title(r)),
        el("div", { class: "when" }, new Date(r.created * 1000).toLocaleString(), " · ",
           el("span", { class: `status ${r.status}` }, r.status)),
        r.message ? el("div", { class: "hint" }, r.message) : null,
        el("div", { class: "settings" }, summary(r)),
        el("div", { class: "actions" },
          r.output && !["queued", "running"].includes(r.status)
            ? el("a", { class: "button small", href: `/api/runs/${r.id}/output.png`, download: "" }, "Download") : null,
          el("button", { type: "button", class: "small", onclick: () => again(r.id) }, "Run again with changes"),
          ["queued", "running"].includes(r.status) ? null : del))));
  }
}

async function stopRun(id) {
  try { await api(`/api/runs/${id}/stop`, { method: "POST" }); } catch (e) { say(e.message); }
}

async function removeRun(id) {
  try {
    await api(`/api/runs/${id}`, { method: "DELETE" });
    state.runs.delete(id);
    if (state.watching === id) { state.watching = null; $("preview").removeAttribute("src"); $("status").textContent = ""; state.history = []; drawPlot(); }
    renderHistory();
    renderStage();
  } catch (e) { say(e.message); }
}

// --- events from the server ---------------------------------------------------------------

function connect() {
  const source = new EventSource("/api/events");
  const on = (kind, fn) => source.addEventListener(kind, (e) => fn(JSON.parse(e.data)));
  on("hello", async (active) => {
    $("connection").textContent = "connected";
    $("connection").className = "pill ok";
    const runs = await api("/api/runs");  // after a restart of the server, what it has now
    const ids = new Set(runs.map((r) => r.id));
    for (const id of [...state.runs.keys()]) if (!ids.has(id)) state.runs.delete(id);
    for (const r of runs) keep(r);
    renderHistory();
    renderQueue(active);
  });
  on("queue", renderQueue);
  on("progress", onProgress);
  on("preview", (d) => wantPreview(d.run, d.step));
  on("note", (d) => { if (d.run === state.watching) $("note").textContent = d.text; });
  on("run", (r) => {
    keep(r);
    renderHistory();
    if (r.id === state.watching) {
      if (!["queued", "running"].includes(r.status)) {
        if (state.running === r.id) state.running = null;
        showFinal(r);
      } else renderStage();
    }
  });
  on("deleted", (d) => { state.runs.delete(d.id); renderHistory(); });
  source.onerror = () => {
    $("connection").textContent = "reconnecting…";
    $("connection").className = "pill bad";
  };
}

// --- start ----------------------------------------------------------------------------

async function init() {
  try {
    state.options = await api("/api/options");
  } catch (e) {
    say(e.message);
    return;
  }
  const o = state.options;
  for (const m of o.choices.model) {
    $("model").append(el("option", { value: m }, m === "auto" && o.auto_model ? `auto (${o.auto_model} here)` : m));
  }
  fillSettings(o.defaults);
  const ex = $("examples");
  ex.append(el("span", { class: "hint" }, "Examples: "));
  for (const e of o.examples) {
    ex.append(el("button", { type: "button", class: "example", title: `Use ${e.name} as the ${e.role}`, onclick: () => {
      if (e.role === "photo") setPhoto(e);
      else if (!state.paintings.some((p) => p.id === e.id)) { state.paintings.push({ id: e.id, name: e.name, weight: 1 }); paintingsChanged(); }
    } }, el("img", { src: `/api/uploads/${e.id}/view.jpg`, alt: e.name }), el("span", {}, `${e.name.replace(/\.[^.]*$/, "").replace(/_/g, " ")}`)));
  }
  $("photo-choose").addEventListener("click", () => $("photo-file").click());
  $("style-choose").addEventListener("click", () => $("style-file").click());
  $("mask-on").addEventListener("change", (e) => { const c = $("mask-canvas"); if (c) c.classList.toggle("on", e.target.checked); });
  $("photo-file").addEventListener("change", (e) => { if (e.target.files[0]) addPhoto(e.target.files[0]); e.target.value = ""; });
  $("style-file").addEventListener("change", (e) => { addPaintings([...e.target.files]); e.target.value = ""; });
  setupDrop($("photo-drop"), (files) => addPhoto(files[0]));
  setupDrop($("style-drop"), addPaintings);
  $("strength-range").addEventListener("input", (e) => { $("style_strength").value = e.target.value; check(); });
  $("style_strength").addEventListener("input", (e) => { const v = Number(e.target.value); if (isFinite(v)) $("strength-range").value = v; });
  for (const name of FIELDS) $(name).addEventListener("input", check);
  $("new-seed").addEventListener("click", () => { $("seed").value = String(Math.floor(Math.random() * 2 ** 31)); check(); });
  $("mask-clear").addEventListener("click", () => { if (state.labels) state.labels.fill(0); state.maskIds = null; drawMask(); });
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", () => state.watching && stopRun(state.watching));
  $("again").addEventListener("click", () => state.watching && again(state.watching));
  window.addEventListener("dragover", (e) => e.preventDefault());  // a missed drop does not open the file
  window.addEventListener("drop", (e) => e.preventDefault());
  check();
  connect();
}

init();
