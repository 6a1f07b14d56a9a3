// genie-robot play: the page. All state lives on the server (one session per tab, its id in sessionStorage);
// this script sends what the player does and draws what the server says. Errors from the server are shown as
// they come (they say what was wrong); a lost connection is retried, then the page re-reads its session.
"use strict";

const $ = (id) => document.getElementById(id);
const TAB_KEY = "genie-play-session";
let sid = sessionStorage.getItem(TAB_KEY);
let state = null;
let busy = false;          // a step, start or upload of this page is in flight
let drawn = "";            // what the history strip shows (version), to redraw only on change
let pollTimer = null;
let lostSince = null;

function say(text) {
  const box = $("message");
  box.textContent = text;
  box.hidden = !text;
}

class ServerError extends Error {}

async function api(method, path, body, raw) {
  let response;
  try {
    const init = { method, headers: {} };
    if (raw !== undefined) {
      init.body = raw;
      init.headers["Content-Type"] = raw.type || "application/octet-stream";
      init.headers["X-Filename"] = encodeURIComponent(raw.name || "upload");
    } else if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    response = await fetch(path, init);
  } catch (e) {
    if (lostSince === null) lostSince = Date.now();
    throw new Error("connection to the play server lost (" + e.message + "); retrying — what the server " +
                    "finished is kept and shown when it answers again");
  }
  if (lostSince !== null) { lostSince = null; say(""); }
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status} without a message` }));
  if (!response.ok) {
    const err = new ServerError(data.error || `HTTP ${response.status}`);
    err.status = response.status;
    throw err;
  }
  return data;
}

const S = (rest) => `/api/sessions/${sid}${rest || ""}`;

async function newSession(model) {
  const st = await api("POST", "/api/sessions", { model: model || $("model").value || undefined });
  sid = st.session;
  sessionStorage.setItem(TAB_KEY, sid);
  return st;
}

async function ensureSession() {
  if (sid) {
    try { return await api("GET", S()); } catch (e) { if (!(e instanceof ServerError) || e.status !== 404) throw e; }
  }
  return newSession();
}

function label(i) {
  return i === 0 ? "start" : `${i}: key ${state.actions[i - 1] + 1}`;
}

function draw(st) {
  state = st;
  const n = st.frames, v = st.version;
  $("model").value = st.model;
  $("status").textContent = `${st.model} · ${n ? `frame ${n - 1}` : "no start yet"} · ` +
    `session ${st.session.slice(0, 6)} · seed ${st.seed}`;
  $("source").textContent = st.source ? `from ${st.source}` : "";
  $("live").hidden = n === 0;
  $("empty").hidden = n > 0;
  if (n) $("live").src = S(`/frames/${n - 1}.png?v=${v}`);

  // The 8 actions, each with its preview.
  const box = $("actions");
  if (box.children.length !== st.num_codes) {
    box.innerHTML = "";
    for (let c = 0; c < st.num_codes; c++) {
      const b = document.createElement("button");
      b.id = `action-${c + 1}`;
      b.title = `key ${c + 1}: latent action (code) ${c}`;
      b.addEventListener("click", () => step(c + 1));
      b.innerHTML = `<div class="pending"></div><span>${c + 1} · code ${c}</span>`;
      box.appendChild(b);
    }
  }
  for (let c = 0; c < st.num_codes; c++) {
    const b = box.children[c];
    const slot = b.firstElementChild;
    const ready = st.previews.includes(c);
    if (ready) {
      const src = S(`/previews/${v}/${c}.png`);
      if (slot.tagName !== "IMG" || slot.getAttribute("src") !== src) {
        const img = document.createElement("img");
        img.src = src;
        img.alt = `preview of key ${c + 1}`;
        b.replaceChild(img, slot);
      }
    } else {
      const div = slot.tagName === "DIV" ? slot : document.createElement("div");
      div.className = "pending";
      div.textContent = !n ? "" : st.settings.previews ? "…" : "off";
      if (div !== slot) b.replaceChild(div, slot);
    }
    b.disabled = busy || st.stepping || !n;
  }

  // Latency of the last step, and how far the previews are.
  const lat = st.latencies_ms;
  let text = lat.length ? `frame ${n - 1}: key ${st.actions[n - 2] + 1} in ${Math.round(lat[lat.length - 1])} ms ` +
    `(${st.settings.steps} MaskGIT steps, temperature ${st.settings.temperature})` : "";
  if (st.stepping) text = "stepping…";
  if (n && st.settings.previews) {
    const ms = Object.values(st.preview_ms);
    text += ` · previews ${st.previews.length}/${st.num_codes}` +
      (ms.length ? ` (${Math.round(ms.reduce((a, b) => a + b, 0) / ms.length)} ms each, ` +
                   `${st.settings.preview_steps} steps)` : "");
  }
  $("latency").textContent = text;

  // Controls (not while the player is typing in one).
  if (settingsEdits === 0) {
    for (const k of ["steps", "temperature", "preview_steps"]) {
      if (document.activeElement !== $(k)) $(k).value = st.settings[k];
    }
    $("previews").checked = st.settings.previews;
  }
  $("undo").disabled = busy || n < 2;
  $("reset").disabled = busy || n < 2;
  $("gif").href = n ? S("/play.gif") : "#";
  $("gif").setAttribute("aria-disabled", n ? "false" : "true");

  // History strip.
  if (drawn !== `${st.session}:${v}`) {
    drawn = `${st.session}:${v}`;
    const h = $("history");
    h.innerHTML = "";
    for (let i = 0; i < n; i++) {
      const f = document.createElement("figure");
      if (i === n - 1) f.className = "current";
      f.innerHTML = `<img src="${S(`/frames/${i}.png?v=${v}`)}" alt="frame ${i}"><figcaption>${label(i)}</figcaption>`;
      h.appendChild(f);
    }
    h.scrollLeft = h.scrollWidth;
  }
  schedulePoll();
}

function schedulePoll() {
  clearTimeout(pollTimer);
  const pending = state && (state.stepping || state.previews_pending);
  pollTimer = setTimeout(poll, lostSince !== null ? 2000 : pending ? 300 : 15000);
}

async function poll() {
  try {
    draw(await ensureSession());
  } catch (e) {
    say(e.message);
    schedulePoll();
  }
}

// Requests that change the world run one after another, in the order the player made them (a click that
// comes while another request runs waits for it; nothing is dropped). Keys are the exception: step() ignores a
// key while a step or another change is in flight, as the server would refuse it.
let chain = Promise.resolve();

function act(fn) {
  const run = async () => {
    busy = true;
    if (state) draw(state);
    try {
      const st = await fn();
      say("");
      draw(st);
    } catch (e) {
      say(e.message);
      if (e instanceof ServerError && e.status === 404) { sid = null; sessionStorage.removeItem(TAB_KEY); }
      poll();
    } finally {
      busy = false;
      if (state) draw(state);
    }
  };
  chain = chain.then(run, run);
  return chain;
}

function step(key) {
  if (busy || (state && state.stepping)) return;
  $("latency").textContent = "stepping…";
  for (const b of $("actions").children) b.classList.toggle("pressed", b.id === `action-${key}`);
  act(() => api("POST", S("/step"), { key }));
}

// Control changes the server has not answered yet: while there are any, draw() leaves the controls as the player
// set them (a blur's change event and a click can arrive together; neither is lost or undone).
let settingsEdits = 0;

function settingsChanged() {
  settingsEdits++;
  sendSettings();
}

function sendSettings() {
  const sent = settingsEdits;
  act(() => api("POST", S("/settings"), {  // the controls' values when its turn comes
    steps: Number($("steps").value), temperature: Number($("temperature").value),
    previews: $("previews").checked, preview_steps: Number($("preview_steps").value),
  })).then(() => {
    if (settingsEdits === sent) { settingsEdits = 0; if (state) draw(state); }
  });
}

document.addEventListener("keydown", (ev) => {
  // Digits typed into a number field are the field's; a checkbox or button that has the focus passes keys on.
  const typing = (ev.target.tagName === "INPUT" && ev.target.type !== "checkbox") || ev.target.tagName === "SELECT";
  if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const n = state ? state.num_codes : 8;
  if (/^[0-9]$/.test(ev.key)) {
    const k = Number(ev.key);
    if (k >= 1 && k <= n) step(k);
    else say(`keys 1-${n} choose a latent action; ${ev.key} is not one of them`);
  } else if (ev.key === "u") {
    act(() => api("POST", S("/undo")));
  } else if (ev.key.length === 1 && ev.key !== " ") {
    say(`keys 1-${n} choose a latent action (u: undo); "${ev.key}" does nothing`);
  }
});

async function init() {
  let info;
  try {
    info = await api("GET", "/api/info");
  } catch (e) {
    say(e.message);
    setTimeout(init, 2000);
    return;
  }
  const sel = $("model");
  sel.innerHTML = info.models.map((m) => `<option>${m}</option>`).join("");
  sel.value = info.default_model;
  sel.addEventListener("change", () => {
    const wanted = sel.value;  // read before act() redraws the selector with the current model
    act(async () => {
      const old = sid;
      const st = await newSession(wanted);
      if (old) api("DELETE", `/api/sessions/${old}`).catch(() => {});
      return st;
    });
  });
  $("starts-note").textContent = info.starts ? `${info.starts} held-out sim frames (never trained on)` :
    info.starts_note;
  const starts = $("starts");
  for (let i = 0; i < info.starts; i++) {
    const img = document.createElement("img");
    img.src = `/api/starts/${i}.png`;
    img.alt = `held-out frame ${i}`;
    img.id = `start-${i}`;
    img.addEventListener("click", () => act(() => api("POST", S("/start"), { heldout: i })));
    starts.appendChild(img);
  }
  if (info.camera) {
    $("camera").hidden = false;
    $("camera").textContent = `the latest frame of ${info.camera.topic}`;
    $("camera").addEventListener("click", () => act(() => api("POST", S("/start"), { camera: true })));
  }
  $("upload").addEventListener("change", () => {
    const file = $("upload").files[0];
    if (!file) return;
    if (file.size > info.max_upload_mb * 1048576) {
      say(`${file.name} is ${(file.size / 1048576).toFixed(1)} MiB; the most this server takes is ` +
          `${info.max_upload_mb} MiB`);
      $("upload").value = "";
      return;
    }
    act(() => api("POST", S("/upload"), undefined, file)).finally(() => { $("upload").value = ""; });
  });
  $("undo").addEventListener("click", () => act(() => api("POST", S("/undo"))));
  $("reset").addEventListener("click", () => act(() => api("POST", S("/reset"))));
  for (const k of ["steps", "temperature", "previews", "preview_steps"]) $(k).addEventListener("change", settingsChanged);
  $("gif").addEventListener("click", (ev) => { if (!state || !state.frames) ev.preventDefault(); });
  poll();
}

init();
