// vaekit latent explorer: plain JavaScript against the JSON API of `vaekit serve`.
"use strict";

const state = { info: null, z: [], pickA: null, pickB: null, path: null, pending: null, busy: false };
const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail));
  return data;
}

function status(text) { $("status").textContent = text; }

// Decode the current z; while a request is in flight, keep only the latest one waiting.
async function decodeCurrent() {
  if (state.busy) { state.pending = true; return; }
  state.busy = true;
  try {
    const { image } = await api("/api/decode", { z: state.z });
    $("decoded").src = image;
  } catch (error) {
    status(error.message);
  } finally {
    state.busy = false;
    if (state.pending) { state.pending = false; decodeCurrent(); }
  }
}

function setZ(z, source) {
  state.z = z.slice();
  for (const input of document.querySelectorAll("#sliders input")) {
    const d = Number(input.dataset.dim);
    input.value = String(Math.max(-3, Math.min(3, state.z[d])));
    input.closest(".slider-row").querySelector(".value").textContent = state.z[d].toFixed(2);
  }
  drawPad();
  status(source);
}

function buildSliders() {
  const box = $("sliders");
  for (const d of state.info.top_dims) {
    const row = document.createElement("div");
    row.className = "slider-row";
    row.innerHTML = `<label for="z${d}">z${d} <span class="muted">${state.info.kl_per_dim[d].toFixed(2)}</span></label>` +
      `<input id="z${d}" type="range" min="-3" max="3" step="0.01" value="0" data-dim="${d}">` +
      `<span class="value">0.00</span>`;
    box.appendChild(row);
    row.querySelector("input").addEventListener("input", (event) => {
      state.z[d] = Number(event.target.value);
      row.querySelector(".value").textContent = state.z[d].toFixed(2);
      drawPad();
      decodeCurrent();
    });
  }
}

function buildKlBars() {
  const kl = state.info.kl_per_dim;
  const order = kl.map((value, d) => [value, d]).sort((a, b) => b[0] - a[0]);
  const largest = Math.max(order[0][0], 1e-9);
  $("kl-bars").innerHTML = order.map(([value, d]) =>
    `<div class="kl-row"><span>z${d}</span><div class="kl-bar${value < 0.01 ? " inactive" : ""}" ` +
    `style="width:${(100 * value / largest).toFixed(1)}%"></div><span>${value.toFixed(2)}</span></div>`).join("");
}

// The pad shows the plane of the two dimensions with the largest KL, over [-3, 3] in each.
function padDims() { return state.info.top_dims.length >= 2 ? state.info.top_dims.slice(0, 2) : null; }

function drawPad() {
  const canvas = $("pad"), ctx = canvas.getContext("2d"), dims = padDims();
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "#dde1ea";
  for (let i = 1; i < 6; i++) {
    const p = (i * canvas.width) / 6;
    ctx.beginPath(); ctx.moveTo(p, 0); ctx.lineTo(p, canvas.height); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(0, p); ctx.lineTo(canvas.width, p); ctx.stroke();
  }
  if (!dims) return;
  const x = ((state.z[dims[0]] + 3) / 6) * canvas.width, y = ((3 - state.z[dims[1]]) / 6) * canvas.height;
  ctx.fillStyle = "#3563e9";
  ctx.beginPath(); ctx.arc(x, y, 5, 0, 2 * Math.PI); ctx.fill();
}

function onPad(event) {
  const dims = padDims();
  if (!dims) return;
  const rect = $("pad").getBoundingClientRect();
  const u = (event.clientX - rect.left) / rect.width, v = (event.clientY - rect.top) / rect.height;
  state.z[dims[0]] = Math.max(-3, Math.min(3, u * 6 - 3));
  state.z[dims[1]] = Math.max(-3, Math.min(3, 3 - v * 6));
  setZ(state.z, `pad: z${dims[0]} = ${state.z[dims[0]].toFixed(2)}, z${dims[1]} = ${state.z[dims[1]].toFixed(2)}`);
  decodeCurrent();
}

async function loadTestImage(index) {
  const data = await api("/api/encode", { index });
  const names = state.info.class_names;
  const label = data.label === null ? "" : ` (label ${names ? names[data.label] : data.label})`;
  setZ(data.z, `test image ${index}${label}: posterior mean`);
  $("decoded").src = data.reconstruction;
}

async function buildThumbnails() {
  const data = await api("/api/thumbnails?start=0&count=24");
  const box = $("thumbnails");
  data.indices.forEach((index, i) => {
    const img = document.createElement("img");
    img.src = data.images[i];
    img.alt = `test image ${index}`;
    img.dataset.index = String(index);
    img.addEventListener("click", () => pick(index, img));
    box.appendChild(img);
  });
}

// An interpolation slot before its image is chosen: a blank placeholder (a transparent pixel), never a broken image
// with its alt text.
const EMPTY = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7";

function show(slot, src) {
  slot.src = src;
  slot.classList.remove("empty");
}

function clear(slot) {
  slot.src = EMPTY;
  slot.classList.add("empty");
}

async function pick(index, img) {
  if (state.pickA === null || state.pickB !== null) {
    document.querySelectorAll("#thumbnails img").forEach((t) => t.classList.remove("pick-a", "pick-b"));
    state.pickA = index; state.pickB = null; state.path = null;
    img.classList.add("pick-a");
    show($("endpoint-a"), img.src);
    clear($("endpoint-b"));
    $("scrub").disabled = true;
    $("scrub-label").textContent = "now choose B";
    return;
  }
  state.pickB = index;
  img.classList.add("pick-b");
  show($("endpoint-b"), img.src);
  state.path = await api("/api/interpolate", { a: state.pickA, b: state.pickB, steps: 41, extend: 0.5 });
  $("scrub").disabled = false;
  showScrub();
}

function showScrub() {
  if (!state.path) return;
  const i = Number($("scrub").value);
  show($("interp-image"), state.path.images[i]);
  $("decoded").src = state.path.images[i];
  const t = state.path.t[i];
  const where = t < 0 ? "extrapolating before A" : t > 1 ? "extrapolating past B" : "between A and B";
  $("scrub-label").textContent = `t = ${t.toFixed(2)} (${where})`;
  setZ(state.path.z[i], `interpolation t = ${t.toFixed(2)}`);
}

// Scoring a drawn or uploaded image: the drawing canvas is shrunk to the model's image size, its grey levels (or
// colour channels) sent to /api/score, and the answer says where the image's NLL falls among the test images'.
function setupDrawing() {
  const canvas = $("draw"), context = canvas.getContext("2d");
  context.fillStyle = "#000"; context.fillRect(0, 0, canvas.width, canvas.height);
  let drawing = false, last = null;
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
  };
  canvas.addEventListener("pointerdown", (event) => { drawing = true; last = point(event); });
  canvas.addEventListener("pointerup", () => { drawing = false; });
  canvas.addEventListener("pointerleave", () => { drawing = false; });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const next = point(event);
    context.strokeStyle = "#fff"; context.lineWidth = 18; context.lineCap = "round";
    context.beginPath(); context.moveTo(...last); context.lineTo(...next); context.stroke();
    last = next;
  });
  $("clear-drawing").addEventListener("click", () => {
    context.fillStyle = "#000"; context.fillRect(0, 0, canvas.width, canvas.height);
  });
  $("upload").addEventListener("change", async () => {
    const file = $("upload").files[0];
    if (!file) return;
    const picture = await createImageBitmap(file);
    context.fillStyle = "#000"; context.fillRect(0, 0, canvas.width, canvas.height);
    context.drawImage(picture, 0, 0, canvas.width, canvas.height);
  });
  $("score").addEventListener("click", scoreDrawing);
}

function drawingPixels() {
  const [channels, height, width] = state.info.image_shape;
  const small = document.createElement("canvas");
  small.width = width; small.height = height;
  const context = small.getContext("2d");
  context.drawImage($("draw"), 0, 0, width, height);
  const rgba = context.getImageData(0, 0, width, height).data;
  const pixels = [];
  for (let c = 0; c < channels; c++) {
    for (let i = 0; i < width * height; i++) {
      const [r, g, b] = [rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]];
      pixels.push(channels === 1 ? Math.round((r + g + b) / 3) : [r, g, b][c]);
    }
  }
  return pixels;
}

async function scoreDrawing() {
  $("score-result").textContent = "scoring…";
  try {
    const scored = await api("/api/score", { pixels: drawingPixels() });
    show($("score-reconstruction"), scored.reconstruction);
    const share = (scored.unlikelier_than * 100).toFixed(0);
    const what = scored.nll === null ? `MSE ${scored.mse.toFixed(4)}` :
      `NLL ${scored.nll.toFixed(1)} nats (${scored.bits_per_dim.toFixed(3)} bits/dim, k = ${scored.k})`;
    const ratios = Object.entries(scored.llr).map(([name, value]) => `${name.toUpperCase()} ${value.toFixed(1)}`);
    $("score-result").textContent = `${what}; less likely than ${share}% of ${scored.reference_images} test images` +
      (ratios.length ? `; ${ratios.join(", ")}` : "") + `; MSE ${scored.mse.toFixed(4)}`;
  } catch (error) {
    $("score-result").textContent = error.message;
  }
}

async function main() {
  state.info = await api("/api/info");
  const info = state.info;
  $("model-info").textContent = `${info.name}: ${info.kind.toUpperCase()}, ${info.latent_dim}-d latent, ` +
    `${info.active_units} active units, ${info.test_images.toLocaleString()} test images`;
  $("pad-dims").textContent = padDims() ? `(z${padDims()[0]} across, z${padDims()[1]} up)` : "(needs 2 dimensions)";
  state.z = new Array(info.latent_dim).fill(0);
  buildSliders();
  buildKlBars();
  setupDrawing();
  drawPad();
  $("pad").addEventListener("pointermove", onPad);
  $("pad").addEventListener("pointerdown", onPad);
  $("scrub").addEventListener("input", showScrub);
  $("sample-prior").addEventListener("click", async () => {
    const seed = Math.floor(Math.random() * 2 ** 31);
    const data = await api("/api/sample", { n: 1, seed });
    setZ(data.z[0], `prior sample (seed ${seed})`);
    $("decoded").src = data.images[0];
  });
  $("random-test").addEventListener("click", () => loadTestImage(Math.floor(Math.random() * info.test_images)));
  await buildThumbnails();
  await decodeCurrent();
  status("z = 0: the prior's mean");
}

main().catch((error) => status(`error: ${error.message}`));
