// Keyboard and on-screen controls of the playground; runs as gr.HTML(js_on_load=...) with
// `element` (this component) and `trigger` (fires its Python event listeners).
//
// A key (or button) going down sends `play` {action, seq}; the last one going up sends
// `pause` {seq}. The server streams frames while an action is held, so holding a key costs
// two events, not one request per frame. `seq` lets the server ignore events that arrive
// out of order. Auto-repeat keydowns are ignored.
const box = element.querySelector("[data-keymap]");
const keymap = JSON.parse(box.dataset.keymap); // KeyboardEvent.key -> action id
const held = []; // keys / buttons currently down, most recent last
let current = null; // action the server was last told to play
let seq = 0;

const norm = (k) => (k.length === 1 ? k.toLowerCase() : k);
const typing = (e) => {
  const t = e.target;
  return t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));
};
const mark = () => {
  element.querySelectorAll("[data-action]").forEach((b) => {
    b.classList.toggle("held", current !== null && Number(b.dataset.action) === current);
  });
};
const sync = () => {
  const next = held.length ? held[held.length - 1][1] : null;
  if (next === current) return;
  current = next;
  mark();
  seq += 1;
  if (next === null) trigger("pause", { seq });
  else trigger("play", { action: next, seq });
};
const down = (id, action) => {
  if (held.some(([k]) => k === id)) return;
  held.push([id, action]);
  if (held[held.length - 1][1] === current) {
    // same action again (a second key for it, or a quick re-press): still one more step
    seq += 1;
    trigger("play", { action, seq });
    return;
  }
  sync();
};
const up = (id) => {
  const i = held.findIndex(([k]) => k === id);
  if (i < 0) return;
  held.splice(i, 1);
  sync();
};
const releaseAll = () => {
  held.length = 0;
  sync();
};

document.addEventListener("keydown", (e) => {
  if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = norm(e.key);
  if (!(k in keymap)) return;
  e.preventDefault(); // arrows and space would scroll the page
  if (!e.repeat) down("key:" + k, keymap[k]);
});
document.addEventListener("keyup", (e) => up("key:" + norm(e.key)));
window.addEventListener("blur", releaseAll);
document.addEventListener("visibilitychange", () => document.hidden && releaseAll());

element.querySelectorAll("[data-action]").forEach((b) => {
  const id = "button:" + b.dataset.action;
  b.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    b.setPointerCapture?.(e.pointerId);
    down(id, Number(b.dataset.action));
  });
  ["pointerup", "pointercancel", "lostpointercapture"].forEach((t) => b.addEventListener(t, () => up(id)));
});

// Frames per second as the browser shows them: count new frames on the screen.
const fpsText = element.querySelector(".genie-fps");
const shown = [];
const observe = () => {
  const screen = document.getElementById("genie-screen");
  if (!screen) return setTimeout(observe, 200);
  let last = null;
  new MutationObserver(() => {
    const img = screen.querySelector("img[data-frame]");
    const id = img && img.dataset.frame + ":" + img.dataset.reset;
    if (id && id !== last) {
      last = id;
      shown.push(performance.now());
    }
  }).observe(screen, { subtree: true, childList: true, attributes: true });
};
observe();
setInterval(() => {
  const now = performance.now();
  while (shown.length && shown[0] < now - 1000) shown.shift();
  if (fpsText) fpsText.textContent = shown.length > 1 ? `${shown.length} frames/s shown` : "";
}, 250);
