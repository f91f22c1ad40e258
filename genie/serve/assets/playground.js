// Keyboard and on-screen controls of the playground; runs as gr.HTML(js_on_load=...) with
// `element` (this component) and `trigger` (fires its Python event listeners).
//
// The page decides what plays and tells the server whenever that changes:
//   play  {action, seq, clock}: `action` (an id, or null) is held and/or the game clock runs
//   pause {seq}: nothing plays (no key held, clock stopped)
// Both carry `world`, the name of the world the legend is of (see the world picker below).
// The server streams frames while something plays, so a held key costs two events and a
// running clock one, not one request per frame. `seq` lets the server ignore events that
// arrive out of order. Auto-repeat keydowns are ignored.
//
// Chords: a world's key entry may name keys held together ("ArrowUp+ArrowRight"). The action
// played is the one whose entry is fully held and has the most keys (a tie goes to the entry
// with the most recently pressed key): ↑ + → plays jump-right, and releasing → falls back to
// ↑ (jump).
//
// Game clock (worlds with a noop action): "ready" until the first key, then "running": with
// no key held the world plays noop, as a game keeps running. The pause key or button toggles
// "paused" (keys still step the world, one frame per tap). Undo, Reset, a new start frame,
// leaving the tab and a long idle stop a running clock until the next key ("ready").
//
// World picker: picking another world re-renders this legend with that world's keys (`watch`
// below): everything is read again from it, and nothing is held.
const held = []; // keys and buttons down, oldest first ("ArrowUp", "button:3")
let legend, world, bindings, keys, noop, pauseKey, idleMs, buttons, clockBox, clockText, clock;
let sent = { action: null, clock: false }; // what the server was last told
let seq = 0;
let lastInput = performance.now();
const configure = () => {
  const box = element.querySelector("[data-bindings]");
  legend = box.dataset.bindings + box.dataset.noop + box.dataset.pauseKey; // what configured it
  bindings = JSON.parse(box.dataset.bindings); // [[keys held together], action id]
  keys = new Set(bindings.flatMap(([ks]) => ks));
  noop = box.dataset.noop === "" ? null : Number(box.dataset.noop);
  pauseKey = box.dataset.pauseKey || null;
  world = box.dataset.world || ""; // sent with every event: the server drops a left world's
  idleMs = (Number(box.dataset.idleS) - 5) * 1000; // a running clock stops just before the server's
  buttons = element.querySelectorAll("button[data-action]");
  buttons.forEach((b) => bindings.push([["button:" + b.dataset.action], Number(b.dataset.action)]));
  clockBox = element.querySelector(".genie-clock");
  const noopName = noop === null ? "" : element.querySelector(`[data-action="${noop}"]`).textContent;
  clockText = {
    ready: "waiting for your first key",
    running: `running: no key held plays ${noopName}`,
    paused: `paused: keys step the world${pauseKey ? `; ${pauseKey.toUpperCase()} resumes` : ""}`,
  };
  held.length = 0;
  clock = noop === null ? "off" : "ready";
  sent = { action: null, clock: false }; // a new world's session streams nothing yet
};
configure();
// keys go to the world, not to the picker that just changed it (arrows would browse it)
const leavePicker = () => document.activeElement?.closest?.("#genie-world") && document.activeElement.blur();

const norm = (k) => (k.length === 1 ? k.toLowerCase() : k);
const typing = (e) => {
  const t = e.target;
  return t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));
};

// the action of the fully held entry with the most keys, or null
const choose = () => {
  let best = null;
  let size = 0;
  let newest = -1;
  for (const [ks, action] of bindings) {
    const at = ks.map((k) => held.indexOf(k));
    if (at.some((i) => i < 0)) continue;
    const last = Math.max(...at);
    if (ks.length > size || (ks.length === size && last > newest)) {
      [best, size, newest] = [action, ks.length, last];
    }
  }
  return best;
};

const mark = () => {
  const now = sent.action !== null ? sent.action : sent.clock ? noop : null;
  buttons.forEach((b) => b.classList.toggle("held", now !== null && Number(b.dataset.action) === now));
  if (!clockBox) return;
  clockBox.dataset.clock = clock;
  clockBox.querySelector(".genie-clock-verb").textContent = clock === "running" ? "Pause" : "▶ Run";
  clockBox.querySelector(".genie-clock-state").textContent = clockText[clock];
};

// tell the server what plays now; `pressed`: a key went down (every press plays a frame)
const sync = (pressed = false) => {
  const action = choose();
  const running = clock === "running";
  const again = pressed && action !== null;
  if (!again && action === sent.action && running === sent.clock) return mark();
  sent = { action, clock: running };
  seq += 1;
  if (action !== null || running) trigger("play", { action, seq, clock: running, world });
  else trigger("pause", { seq, clock: false, world });
  mark();
};
const down = (id) => {
  if (held.includes(id)) return;
  held.push(id);
  lastInput = performance.now();
  if (clock === "ready") clock = "running"; // the first key starts the game
  sync(true);
};
const up = (id) => {
  const i = held.indexOf(id);
  if (i < 0) return;
  held.splice(i, 1);
  lastInput = performance.now();
  sync();
};
const halt = () => {
  if (clock === "running") clock = "ready";
  sync();
};
const toggle = () => {
  if (clock === "off") return;
  clock = clock === "running" ? "paused" : "running";
  lastInput = performance.now();
  sync();
};
const releaseAll = () => {
  held.length = 0;
  halt();
};

document.addEventListener("keydown", (e) => {
  if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = norm(e.key);
  if (k === pauseKey && clock !== "off") {
    e.preventDefault();
    if (!e.repeat) toggle();
    return;
  }
  if (!keys.has(k)) return;
  e.preventDefault(); // arrows and space would scroll the page
  if (!e.repeat) down(k);
});
document.addEventListener("keyup", (e) => up(norm(e.key)));
window.addEventListener("blur", releaseAll);
document.addEventListener("visibilitychange", () => document.hidden && releaseAll());
// Undo and Reset stop a running clock (the server stops it too): capture runs before Gradio's
document.addEventListener(
  "click",
  (e) => e.target.closest && e.target.closest("#genie-undo, #genie-reset") && halt(),
  true,
);
element.addEventListener("click", (e) => e.target.closest?.("[data-clock-toggle]") && toggle());
setInterval(() => {
  if (clock === "running" && !held.length && performance.now() - lastInput > idleMs) halt();
}, 1000);

// the action buttons (listened to on the legend: a new world's legend has new buttons)
const actionButton = (e) => e.target.closest?.("button[data-action]");
element.addEventListener("pointerdown", (e) => {
  const b = actionButton(e);
  if (!b) return;
  e.preventDefault();
  b.setPointerCapture?.(e.pointerId);
  down("button:" + b.dataset.action);
});
["pointerup", "pointercancel", "lostpointercapture"].forEach((t) =>
  element.addEventListener(t, (e) => {
    const b = actionButton(e);
    if (b) up("button:" + b.dataset.action);
  }),
);
mark();
const reconfigure = () => {
  configure();
  leavePicker();
  mark();
};
if (typeof watch === "function") watch("value", reconfigure);
else {
  // Gradio versions without `watch`: notice a new legend in the page
  const now = () => {
    const box = element.querySelector("[data-bindings]");
    return box && box.dataset.bindings + box.dataset.noop + box.dataset.pauseKey;
  };
  new MutationObserver(() => now() && now() !== legend && reconfigure()).observe(element, {
    childList: true,
    subtree: true,
    attributes: true,
    attributeFilter: ["data-bindings", "data-noop", "data-pause-key"],
  });
}

// Watch the screen: count new frames (frames/s as the browser shows them), and stop a
// running clock when a new start frame arrives (a gallery click or an upload).
const fpsText = element.querySelector(".genie-fps");
const shown = [];
const observe = () => {
  const screen = document.getElementById("genie-screen");
  if (!screen) return setTimeout(observe, 200);
  let last = null;
  let resets = null;
  // (no frame of a start or world this tab has left arrives after the new one: the server
  // orders them, docs/PLAY.md "Several worlds")
  new MutationObserver(() => {
    const img = screen.querySelector("img[data-frame]");
    if (!img) return;
    const id = img.dataset.frame + ":" + img.dataset.reset;
    if (id !== last) {
      last = id;
      shown.push(performance.now());
    }
    if (resets !== null && img.dataset.reset !== resets) {
      halt();
      leavePicker();
    }
    resets = img.dataset.reset;
  }).observe(screen, { subtree: true, childList: true, attributes: true });
};
observe();
setInterval(() => {
  const now = performance.now();
  while (shown.length && shown[0] < now - 1000) shown.shift();
  if (fpsText) fpsText.textContent = shown.length > 1 ? `${shown.length} frames/s shown` : "";
}, 250);
