// veil review: the page. Plain JavaScript, no build step. Every request carries the token.
"use strict";

const TOKEN = document.body.dataset.token;
const COLOURS = { detected: "#d33", filled: "#f3a0a0", off: "#3a3" };
const S = { frames: 0, width: 0, height: 0, fps: 25, edits: [], redo: [], tracks: [], frame: 0, boxes: [],
            mode: "select", selected: null, inMark: null, outMark: null, playing: null, version: 0, drag: null };
const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const options = { headers: { "X-Veil-Token": TOKEN } };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function say(text) { $("message").textContent = text || ""; }

async function load() {
  const state = await api("/api/state");
  Object.assign(S, { frames: state.frames, width: state.width, height: state.height, edits: state.edits,
                     tracks: state.tracks });
  const [num, den] = String(state.fps).split("/").map(Number);
  S.fps = den ? num / den : (num || 25);
  $("video-name").textContent = state.video.path;
  $("command").textContent = state.command;
  $("seek").max = S.frames - 1;
  renderTracks();
  await show(0);
}

// --- the frame and its boxes --------------------------------------------------------------------

async function show(index) {
  S.frame = Math.max(0, Math.min(S.frames - 1, index));
  $("seek").value = S.frame;
  $("frame-label").textContent = `frame ${S.frame} / ${S.frames - 1}`;
  const kind = $("preview").checked ? "preview" : "frame";
  const img = $("frame");
  const loaded = new Promise((resolve) => { img.onload = resolve; img.onerror = resolve; });
  img.src = `/api/${kind}/${S.frame}?token=${encodeURIComponent(TOKEN)}&v=${S.version}`;
  const data = await api(`/api/boxes/${S.frame}`);
  await loaded;
  S.boxes = data.boxes;
  draw();
}

function scale() { return $("frame").clientWidth / S.width; }

function draw() {
  const canvas = $("overlay"), img = $("frame");
  canvas.width = img.clientWidth;
  canvas.height = img.clientHeight;
  const ctx = canvas.getContext("2d"), k = scale();
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  for (const b of S.boxes) {
    const [x1, y1, x2, y2] = b.box.map((v) => v * k);
    ctx.lineWidth = b.track === S.selected ? 3 : 2;
    ctx.strokeStyle = b.protected ? (b.detected ? COLOURS.detected : COLOURS.filled) : COLOURS.off;
    ctx.setLineDash(b.detected || !b.protected ? [] : [6, 4]);
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.setLineDash([]);
    ctx.fillStyle = ctx.strokeStyle;
    ctx.font = "12px sans-serif";
    ctx.fillText(`${b.kind} ${b.track}`, x1 + 2, Math.max(12, y1 - 3));
  }
  if (S.drag && S.drag.rect) {
    const [x1, y1, x2, y2] = S.drag.rect.map((v) => v * k);
    ctx.strokeStyle = "#2f6fd6";
    ctx.lineWidth = 2;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  }
}

function point(event) {
  const r = $("overlay").getBoundingClientRect(), k = scale();
  return [(event.clientX - r.left) / k, (event.clientY - r.top) / k];
}

function hit(p) {
  const near = 8 / scale();
  for (const b of [...S.boxes].reverse()) {
    const [x1, y1, x2, y2] = b.box;
    if (p[0] >= x1 - near && p[0] <= x2 + near && p[1] >= y1 - near && p[1] <= y2 + near) {
      const corner = Math.abs(p[0] - x2) < near && Math.abs(p[1] - y2) < near;
      return { box: b, corner };
    }
  }
  return null;
}

function onDown(event) {
  const p = point(event);
  if (S.mode === "select") {
    const found = hit(p);
    S.selected = found ? found.box.track : null;
    highlight();
    if (found) S.drag = { start: p, box: found.box, original: [...found.box.box], corner: found.corner };
  } else {
    S.drag = { start: p, rect: [p[0], p[1], p[0], p[1]] };
  }
  draw();
}

function onMove(event) {
  if (!S.drag) return;
  const p = point(event), d = S.drag;
  if (d.box) {
    const [x1, y1, x2, y2] = d.original, dx = p[0] - d.start[0], dy = p[1] - d.start[1];
    d.box.box = d.corner ? [x1, y1, Math.max(x1 + 4, x2 + dx), Math.max(y1 + 4, y2 + dy)]
                         : [x1 + dx, y1 + dy, x2 + dx, y2 + dy];
  } else {
    d.rect = [Math.min(d.start[0], p[0]), Math.min(d.start[1], p[1]), Math.max(d.start[0], p[0]),
              Math.max(d.start[1], p[1])];
  }
  draw();
}

async function onUp() {
  const d = S.drag;
  S.drag = null;
  if (!d) return;
  const round = (box) => box.map((v) => Math.round(v * 100) / 100);
  if (d.box) {
    if (d.box.box.some((v, i) => Math.abs(v - d.original[i]) > 0.5)) {
      await commit({ op: "box", track: d.box.track, frame: S.frame, box: round(d.box.box) });
    }
    return;
  }
  const [x1, y1, x2, y2] = d.rect;
  if (x2 - x1 < 4 || y2 - y1 < 4) { draw(); return; }
  if (S.mode === "face") {
    say("following the drawn face through the video ...");
    try {
      const found = await api("/api/follow", { frame: S.frame, box: round(d.rect) });
      await commit({ op: "add", track: found.track, kind: "face", boxes: found.boxes });
      const last = found.boxes[found.boxes.length - 1][0], first = found.boxes[0][0];
      say(`face ${found.track} added on frames ${first}-${last}`);
    } catch (error) { say(error.message); draw(); }
  } else if (S.mode === "region") {
    const ids = S.edits.filter((e) => e.op === "region").map((e) => e.track);
    const track = Math.max(199999, ...ids) + 1;
    const from = S.inMark ?? 0, to = S.outMark ?? S.frames - 1;
    await commit({ op: "region", track, from: Math.min(from, to), to: Math.max(from, to), box: round(d.rect) });
    say(`region ${track} protected on frames ${Math.min(from, to)}-${Math.max(from, to)}`);
  }
}

// --- edits, undo and redo ---------------------------------------------------------------------------

async function save() {
  try {
    const data = await api("/api/edits", { edits: S.edits });
    S.tracks = data.tracks;
    S.version += 1;
    renderTracks();
    await show(S.frame);
  } catch (error) { say(error.message); }
}

async function commit(edit) { S.edits.push(edit); S.redo = []; await save(); }
async function undo() { if (S.edits.length) { S.redo.push(S.edits.pop()); await save(); } }
async function redo() { if (S.redo.length) { S.edits.push(S.redo.pop()); await save(); } }

// --- the track list -----------------------------------------------------------------------------

function highlight() {
  for (const li of document.querySelectorAll(".track")) {
    li.classList.toggle("selected", Number(li.dataset.track) === S.selected);
  }
}

function renderTracks() {
  const list = $("tracks");
  list.replaceChildren();
  for (const track of S.tracks) {
    const li = document.createElement("li");
    li.className = "track";
    li.dataset.track = track.id;
    const thumb = document.createElement("img");
    thumb.src = `/api/thumb/${track.id}?token=${encodeURIComponent(TOKEN)}&v=${S.version}`;
    thumb.alt = `${track.kind} ${track.id}`;
    const row = document.createElement("div");
    row.className = "row";
    const name = document.createElement("b");
    name.textContent = `${track.kind} ${track.id}` + (track.source === "auto" ? "" : ` (${track.source})`);
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.className = "protect";
    box.checked = !track.runs.some((r) => r[2] === "off");
    box.title = "Protect this track on every frame (untick: leave it as it is)";
    box.onchange = () => commit({ op: "protect", track: track.id, on: box.checked, from: 0, to: S.frames - 1 });
    label.append(box, " protect");
    const range = document.createElement("button");
    range.textContent = "off in range";
    range.title = "Leave it as it is from the in to the out mark";
    range.onclick = () => {
      const from = S.inMark ?? 0, to = S.outMark ?? S.frames - 1;
      commit({ op: "protect", track: track.id, on: false, from: Math.min(from, to), to: Math.max(from, to) });
    };
    const merge = document.createElement("select");
    merge.className = "merge";
    merge.append(new Option("merge into ...", ""));
    for (const other of S.tracks) if (other.id !== track.id && other.kind === track.kind) {
      merge.append(new Option(`${other.kind} ${other.id}`, other.id));
    }
    merge.onchange = () => { if (merge.value !== "") commit({ op: "merge", track: track.id, into: Number(merge.value) }); };
    row.append(name, label, range, merge);
    const timeline = document.createElement("canvas");
    timeline.width = 280;
    timeline.height = 12;
    const ctx = timeline.getContext("2d");
    ctx.fillStyle = "#eee";
    ctx.fillRect(0, 0, timeline.width, timeline.height);
    for (const [from, to, state] of track.runs) {
      ctx.fillStyle = COLOURS[state];
      const x = (from / S.frames) * timeline.width;
      ctx.fillRect(x, 0, Math.max(1, ((to - from + 1) / S.frames) * timeline.width), timeline.height);
    }
    timeline.onclick = (event) => {
      const r = timeline.getBoundingClientRect();
      show(Math.floor(((event.clientX - r.left) / r.width) * S.frames));
    };
    li.onclick = (event) => { if (event.target === li || event.target === name) { S.selected = track.id; highlight(); draw(); } };
    li.append(thumb, row, timeline);
    list.append(li);
  }
  highlight();
}

// --- render, play, stop -----------------------------------------------------------------------------

async function render() {
  $("render").disabled = true;
  try {
    await api("/api/render", {});
    for (;;) {
      const state = await api("/api/render");
      if (state.state === "running") {
        $("render-status").textContent = `rendering ${state.done} / ${state.total}`;
      } else if (state.state === "done") {
        $("render-status").textContent = `done: ${state.output}`;
        const video = $("result");
        video.src = `/media/${encodeURIComponent(state.output)}?token=${encodeURIComponent(TOKEN)}&v=${Date.now()}`;
        video.hidden = false;
        break;
      } else {
        $("render-status").textContent = `failed: ${state.error}`;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
  } catch (error) { $("render-status").textContent = `failed: ${error.message}`; }
  $("render").disabled = false;
}

function play() {
  if (S.playing) { clearInterval(S.playing); S.playing = null; $("play").textContent = "Play"; return; }
  $("play").textContent = "Pause";
  let busy = false;
  S.playing = setInterval(async () => {
    if (busy) return;
    if (S.frame >= S.frames - 1) { play(); return; }
    busy = true;
    await show(S.frame + 1);
    busy = false;
  }, 1000 / S.fps);
}

function marks() {
  const text = S.inMark === null && S.outMark === null ? "" : `range ${S.inMark ?? 0}-${S.outMark ?? S.frames - 1}`;
  $("range-label").textContent = text;
}

function wire() {
  const canvas = $("overlay");
  canvas.addEventListener("mousedown", onDown);
  window.addEventListener("mousemove", onMove);
  window.addEventListener("mouseup", onUp);
  window.addEventListener("resize", draw);
  $("seek").oninput = () => show(Number($("seek").value));
  $("prev").onclick = () => show(S.frame - 1);
  $("next").onclick = () => show(S.frame + 1);
  $("play").onclick = play;
  $("undo").onclick = undo;
  $("redo").onclick = redo;
  $("preview").onchange = () => show(S.frame);
  $("render").onclick = render;
  $("mark-in").onclick = () => { S.inMark = S.frame; marks(); };
  $("mark-out").onclick = () => { S.outMark = S.frame; marks(); };
  $("stop").onclick = async () => { await api("/api/stop", {}); say("the server has stopped; close this page"); };
  for (const button of document.querySelectorAll(".mode")) {
    button.onclick = () => {
      S.mode = button.dataset.mode;
      for (const b of document.querySelectorAll(".mode")) b.classList.toggle("active", b === button);
    };
  }
  window.addEventListener("keydown", (event) => {
    if (event.target.tagName === "INPUT" && event.target.type !== "checkbox") return;
    if (event.key === "ArrowLeft") show(S.frame - 1);
    else if (event.key === "ArrowRight") show(S.frame + 1);
    else if ((event.ctrlKey || event.metaKey) && event.key === "z") { event.preventDefault(); undo(); }
    else if ((event.ctrlKey || event.metaKey) && event.key === "y") { event.preventDefault(); redo(); }
  });
}

wire();
load().catch((error) => say(error.message));
