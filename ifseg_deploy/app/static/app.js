// ifseg-deploy app: draws the newest frame of each tile with its class colours, and drives the HTTP API.
// Protocol: see ifseg_deploy/app/server.py. No build step, no dependencies.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const withToken = (path, query) => {
  const parts = [query, token ? "token=" + encodeURIComponent(token) : ""].filter(Boolean);
  return path + (parts.length ? "?" + parts.join("&") : "");
};
const $ = (id) => document.getElementById(id);
const tiles = new Map(); // id -> {el, canvas, ctx, caption, status, legend, head, seq, frame, colors}
let ws = null;
let paused = false;
let alpha = Number($("opacity").value);
let selected = null;
let camera = null; // {stream, video, canvas, timer}
let frames = 0; // frames drawn by this page
const recent = []; // {frame, tile, seq, index, categories} of the last frames drawn (window.ifsegFrames)
window.ifsegFrames = recent;

function tileOf(id, name) {
  let t = tiles.get(id);
  if (t) return t;
  const el = document.createElement("figure");
  el.className = "tile";
  el.dataset.tile = id;
  el.innerHTML = '<canvas></canvas><figcaption><span class="name"></span> · <span class="status"></span></figcaption>' +
    '<ul class="legend" aria-label="Legend"></ul>';
  const canvas = el.querySelector("canvas");
  t = { el, canvas, ctx: canvas.getContext("2d"), name: el.querySelector(".name"),
        status: el.querySelector(".status"), legend: el.querySelector(".legend"), head: null };
  t.name.textContent = name || id;
  el.addEventListener("click", () => select(id));
  $("tiles").appendChild(el);
  tiles.set(id, t);
  if (selected === null) select(id);
  return t;
}

function select(id) {
  selected = id;
  for (const [k, t] of tiles) t.el.classList.toggle("selected", k === id);
}

function draw(t) {
  if (!t.frame) return;
  const { canvas, ctx } = t;
  if (canvas.width !== t.frame.width || canvas.height !== t.frame.height) {
    canvas.width = t.frame.width;
    canvas.height = t.frame.height;
  }
  ctx.globalAlpha = 1;
  ctx.drawImage(t.frame, 0, 0);
  ctx.globalAlpha = alpha; // frame * (1 - alpha) + colours * alpha, as the recordings and snapshots blend
  ctx.drawImage(t.colors, 0, 0);
  ctx.globalAlpha = 1;
}

function showLegend(t, rows) {
  t.legend.replaceChildren(...rows.map((r) => {
    const li = document.createElement("li");
    li.dataset.name = r.name;
    li.innerHTML = '<span class="swatch"></span><span class="cls"></span><span class="share"></span>';
    li.querySelector(".swatch").style.background = r.color;
    li.querySelector(".cls").textContent = r.name;
    li.querySelector(".share").textContent = (100 * r.share).toFixed(1) + " %";
    return li;
  }));
}

function fmt(ms) { return ms == null ? "–" : ms.toFixed(1) + " ms"; }

async function onFrame(buf, sock) {
  const n = new DataView(buf).getUint32(0);
  const head = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
  const jpeg = new Blob([new Uint8Array(buf, 4 + n, head.jpeg)], { type: "image/jpeg" });
  const png = new Blob([new Uint8Array(buf, 4 + n + head.jpeg, head.png)], { type: "image/png" });
  const [frame, colors] = await Promise.all([createImageBitmap(jpeg), createImageBitmap(png)]);
  const t = tileOf(head.tile, head.name);
  // decoding is asynchronous, so an older frame (or one of a closed connection) can finish after a newer one
  if (sock !== ws || (t.seq != null && head.seq <= t.seq)) { frame.close(); colors.close(); return; }
  t.seq = head.seq;
  if (t.frame) { t.frame.close(); t.colors.close(); }
  Object.assign(t, { frame, colors, head });
  draw(t);
  showLegend(t, head.legend);
  frames += 1;
  t.el.dataset.seq = head.seq;
  t.el.dataset.index = head.index;
  t.el.dataset.categories = JSON.stringify(head.categories);
  document.body.dataset.frames = frames;
  recent.push({ frame: frames, tile: head.tile, seq: head.seq, index: head.index, categories: head.categories });
  if (recent.length > 100) recent.shift();
  $("latency").textContent = fmt(head.latency_ms);
  $("to-browser").textContent = fmt(Date.now() - head.captured_unix * 1000);
  $("stages").textContent = Object.entries(head.stages_ms).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(" · ") + " ms";
}

function onStatus(s) {
  $("model").textContent = `${s.backend} · ${s.precision} · ${s.device}`;
  $("fps").textContent = s.fps.toFixed(1);
  $("frames").textContent = s.frames;
  $("dropped").textContent = s.dropped;
  const input = $("categories");
  if (!input.dataset.edited) input.value = s.categories_text;
  const ids = new Set(s.tiles.map((x) => x.id));
  for (const [id, t] of tiles) {
    if (!ids.has(id)) { t.el.remove(); tiles.delete(id); if (selected === id) selected = null; }
  }
  for (const x of s.tiles) {
    const t = tileOf(x.id, x.name);
    t.status.textContent = x.status === "live" ? `${x.fps.toFixed(1)} FPS` : x.status;
    t.status.classList.toggle("bad", x.status !== "live");
    if (x.id === selected) $("record").setAttribute("aria-pressed", String(x.recording));
  }
  if (selected === null && tiles.size) select(tiles.keys().next().value);
}

function askNext() {
  if (!paused && ws && ws.readyState === WebSocket.OPEN) ws.send('{"type":"next"}');
}

function connect() {
  const url = new URL(withToken("ws"), location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const sock = new WebSocket(url);
  ws = sock;
  sock.binaryType = "arraybuffer";
  sock.onopen = () => {
    $("conn").textContent = "connected";
    $("conn").className = "";
    for (const t of tiles.values()) t.seq = null; // a restarted server numbers its frames anew
    askNext();
  };
  sock.onmessage = async (ev) => {
    if (typeof ev.data === "string") { onStatus(JSON.parse(ev.data)); return; }
    // one request in flight per connection: a frame of a closed one asks nothing of its successor
    try { await onFrame(ev.data, sock); } finally { if (sock === ws) askNext(); }
  };
  sock.onclose = () => {
    $("conn").textContent = "disconnected: reconnecting…";
    $("conn").className = "warn";
    stopCamera();
    setTimeout(connect, 1000);
  };
}

async function api(method, path, body) {
  const res = await fetch(withToken(path), {
    method, headers: body ? { "Content-Type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined,
  });
  const data = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
  return data;
}

function download(href, name) {
  const a = document.createElement("a");
  a.href = href;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
}

$("categories").addEventListener("input", (e) => { e.target.dataset.edited = "1"; });
$("cat-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("categories");
  try {
    const data = await api("PUT", "api/categories", { categories: input.value });
    $("cat-error").textContent = "";
    document.body.dataset.appliedAtFrame = frames; // frames drawn when the new list took effect
    input.value = data.categories_text;
    delete input.dataset.edited;
  } catch (err) {
    $("cat-error").textContent = err.message; // the previous list stays in force
  }
});

$("opacity").addEventListener("input", (e) => {
  alpha = Number(e.target.value);
  for (const t of tiles.values()) draw(t);
});

$("pause").addEventListener("click", (e) => {
  paused = !paused;
  e.target.setAttribute("aria-pressed", String(paused));
  e.target.textContent = paused ? "Resume" : "Pause";
  askNext();
});

$("snapshot").addEventListener("click", async () => {
  const t = tiles.get(selected);
  if (!t || !t.head) return;
  const stem = `${t.head.tile}-${t.head.index}`;
  const blob = await new Promise((ok) => t.canvas.toBlob(ok, "image/png")); // what is shown, at the frame's size
  download(URL.createObjectURL(blob), `snapshot-${stem}.png`);
  const res = await fetch(withToken("api/labels.png", `tile=${encodeURIComponent(t.head.tile)}&seq=${t.head.seq}`));
  if (res.ok) download(URL.createObjectURL(await res.blob()), `labels-${stem}.png`);
});

$("record").addEventListener("click", async (e) => {
  const on = e.target.getAttribute("aria-pressed") === "true";
  try {
    const r = await api("POST", "api/record", { action: on ? "stop" : "start", tile: selected });
    e.target.setAttribute("aria-pressed", String(r.recording));
    if (r.url) {
      const a = document.createElement("a");
      a.href = withToken(r.url);
      a.download = r.file;
      a.textContent = `${r.file} (${r.frames} frames)`;
      $("downloads").prepend(a);
    }
  } catch (err) {
    $("cat-error").textContent = err.message;
  }
});

function stopCamera() {
  if (!camera) return;
  clearTimeout(camera.timer);
  camera.stream.getTracks().forEach((tr) => tr.stop());
  camera = null;
  $("camera").setAttribute("aria-pressed", "false");
  if (ws && ws.readyState === WebSocket.OPEN) ws.send('{"type":"camera_stop"}');
}

async function startCamera() {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  const video = document.createElement("video");
  video.muted = true;
  video.playsInline = true;
  video.srcObject = stream;
  await video.play();
  camera = { stream, video, canvas: document.createElement("canvas"), timer: null, busy: false };
  $("camera").setAttribute("aria-pressed", "true");
  const send = () => {
    if (!camera) return;
    // newest wins: a frame is sent only when the previous one has left the socket
    if (!camera.busy && ws && ws.readyState === WebSocket.OPEN && ws.bufferedAmount === 0 && video.videoWidth) {
      const c = camera.canvas;
      c.width = video.videoWidth;
      c.height = video.videoHeight;
      c.getContext("2d").drawImage(video, 0, 0);
      camera.busy = true;
      c.toBlob((b) => { if (camera) camera.busy = false; if (b && ws.readyState === WebSocket.OPEN) ws.send(b); },
               "image/jpeg", 0.85);
    }
    camera.timer = setTimeout(send, 33);
  };
  send();
}

$("camera").addEventListener("click", async () => {
  if (camera) { stopCamera(); return; }
  try { await startCamera(); } catch (err) { $("cat-error").textContent = `camera: ${err.message}`; }
});

connect();
