// Flowform pages: live conditions, record pickers, uploads, signatures,
// location, repeatable groups. Everything works from data attributes the
// server renders; nothing here knows any application.
import { evaluate } from "./cond.js";

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

function paintBadges(root) {
  root.querySelectorAll("[data-color]").forEach((el) => el.style.setProperty("--c", el.dataset.color));
}

// ---- values of fields, as the condition language sees them ----
// The value as the server will see it: nothing for a hidden field, the
// field's default for an empty one, numbers as numbers.
function fieldValue(wrapper) {
  if (wrapper.hidden) return null;
  const value = rawValue(wrapper);
  if ((value === null || value === "") && wrapper.dataset.default) {
    try { return JSON.parse(wrapper.dataset.default); } catch { return null; }
  }
  return value;
}

function rawValue(wrapper) {
  const type = wrapper.dataset.type;
  const controls = [...wrapper.querySelectorAll("input, select, textarea")].filter((c) => c.closest("[data-field]") === wrapper);
  const named = controls.filter((c) => c.name && !c.name.startsWith("_q_") && !c.name.endsWith(".present"));
  const text = (c) => (c && c.value.trim() !== "" ? c.value : null);
  switch (type) {
    case "boolean": return !!named.find((c) => c.type === "checkbox")?.checked;
    case "integer":
    case "number": {
      const checked = named.filter((c) => c.type === "radio");
      const raw = checked.length ? checked.find((c) => c.checked)?.value : text(named[0]);
      if (raw === null || raw === undefined) return null;
      const n = Number(raw);
      return Number.isNaN(n) ? raw : n;
    }
    case "enum": {
      if (named.some((c) => c.type === "checkbox")) {
        const v = named.filter((c) => c.checked).map((c) => c.value);
        return v.length ? v : null;
      }
      if (named.some((c) => c.type === "radio")) return named.find((c) => c.checked)?.value ?? null;
      return text(named[0]);
    }
    case "files": {
      try { const v = JSON.parse(named[0]?.value || "[]"); return v.length ? v : null; } catch { return null; }
    }
    case "location": {
      const tag = text(named.find((c) => c.name.endsWith(".tag")));
      const lat = text(named.find((c) => c.name.endsWith(".lat")));
      const lng = text(named.find((c) => c.name.endsWith(".lng")));
      const place = {};
      if (tag !== null) place.tag = tag.trim();
      if (lat !== null && lng !== null) { place.lat = Number(lat); place.lng = Number(lng); }
      return Object.keys(place).length ? place : null;
    }
    case "group": {
      const items = wrapper.querySelectorAll(":scope > fieldset > [data-group-items] > [data-group-item]");
      return items.length ? [...items].map(() => ({})) : null;
    }
    default: return text(named[0]);
  }
}

function scopeData(scope) {
  const data = {};
  scope.querySelectorAll("[data-field]").forEach((w) => {
    const owner = w.parentElement.closest("[data-group-item], [data-form]");
    if (owner === scope) data[w.dataset.name] = fieldValue(w);
  });
  return data;
}

function refreshConditions(form) {
  const scopes = [form, ...form.querySelectorAll("[data-group-item]")];
  for (const scope of scopes) {
    const data = scopeData(scope);
    scope.querySelectorAll("[data-field]").forEach((w) => {
      if (w.parentElement.closest("[data-group-item], [data-form]") !== scope) return;
      if (w.dataset.visibleWhen) {
        const visible = evaluate(JSON.parse(w.dataset.visibleWhen), data);
        w.hidden = !visible;
        w.querySelectorAll("input, select, textarea").forEach((c) => { c.disabled = !visible || c.hasAttribute("data-locked"); });
      }
      const required = w.hasAttribute("data-required") || (w.dataset.requiredWhen ? evaluate(JSON.parse(w.dataset.requiredWhen), data) : false);
      const mark = w.querySelector("[data-req-mark]");
      if (mark) mark.hidden = !required;
      w.querySelectorAll("input:not([type=hidden]), select, textarea").forEach((c) => c.setAttribute("aria-required", String(required)));
    });
  }
}

// ---- record pickers ----
// Fields that take a value from the chosen record (`from: REF.FIELD`).
function fillFrom(picker, fill) {
  const wrapper = picker.closest("[data-field]");
  const scope = wrapper.parentElement.closest("[data-group-item], [data-form]");
  if (!scope || !fill) return;
  scope.querySelectorAll(`[data-from^="${wrapper.dataset.name}."]`).forEach((target) => {
    const value = fill[target.dataset.from.split(".")[1]];
    if (value === undefined || value === null) return;
    target.querySelectorAll("input, select, textarea").forEach((c) => {
      if (c.type === "hidden" || c.name.startsWith("_q_")) return;
      if (c.type === "radio" || c.type === "checkbox") c.checked = String(c.value) === String(value);
      else c.value = String(value);
    });
  });
}

function choose(picker, id, title, fill) {
  picker.querySelector("[data-picker-value]").value = id;
  picker.querySelector("[data-picker-title]").textContent = title;
  picker.querySelector("[data-picker-chosen]").hidden = !id;
  const search = picker.querySelector("[data-picker-search]");
  search.hidden = !!id;
  search.value = "";
  picker.querySelector("[data-picker-results]").innerHTML = "";
  if (fill) { try { fillFrom(picker, JSON.parse(fill)); } catch { /* a record without fields */ } }
  picker.dispatchEvent(new Event("change", { bubbles: true }));
  if (!id) search.focus();
}

// ---- uploads ----
async function upload(box, file) {
  const status = box.querySelector("[data-files-status]");
  const input = box.querySelector("[data-files-input]");
  const hidden = box.querySelector("[data-files-value]");
  const list = JSON.parse(hidden.value || "[]");
  if (list.length >= Number(box.dataset.max || 20)) {
    status.textContent = `${input.dataset.failed}: ≤ ${box.dataset.max}`;
    return;
  }
  status.textContent = input.dataset.uploading;
  const body = new FormData();
  body.append("file", file, file.name);
  try {
    const r = await fetch("/api/v1/files", { method: "POST", body, headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin" });
    const answer = await r.json();
    if (!r.ok) throw new Error(answer.message || r.statusText);
    const now = JSON.parse(hidden.value || "[]");
    now.push(answer);
    hidden.value = JSON.stringify(now);
    const li = document.createElement("li");
    li.dataset.fileId = answer.id;
    if ((answer.type || "").startsWith("image/")) {
      const img = document.createElement("img");
      img.src = "/api/v1/files/" + answer.id;
      img.alt = answer.name;
      li.append(img);
    } else {
      const span = document.createElement("span");
      span.textContent = answer.name;
      li.append(span);
    }
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "link";
    remove.dataset.fileRemove = "";
    remove.textContent = document.documentElement.lang === "en" ? "Remove" : "删除";
    li.append(remove);
    box.querySelector("[data-previews]").append(li);
    status.textContent = "";
  } catch (e) {
    status.textContent = input.dataset.failed + ": " + e.message;
  }
  box.dispatchEvent(new Event("change", { bubbles: true }));
}

// ---- signatures ----
function signaturePad(box) {
  const canvas = box.querySelector("[data-signature-pad]");
  const hidden = box.querySelector("[data-signature-value]");
  const ctx = canvas.getContext("2d");
  ctx.lineWidth = 3;
  ctx.lineCap = "round";
  ctx.strokeStyle = "#1d2730";
  if (hidden.value) {
    const img = new Image();
    img.onload = () => ctx.drawImage(img, 0, 0);
    img.src = hidden.value;
  }
  let drawing = false;
  const at = (e) => {
    const r = canvas.getBoundingClientRect();
    return [((e.clientX - r.left) * canvas.width) / r.width, ((e.clientY - r.top) * canvas.height) / r.height];
  };
  canvas.addEventListener("pointerdown", (e) => { drawing = true; canvas.setPointerCapture(e.pointerId); ctx.beginPath(); ctx.moveTo(...at(e)); });
  canvas.addEventListener("pointermove", (e) => { if (!drawing) return; ctx.lineTo(...at(e)); ctx.stroke(); });
  const end = () => {
    if (!drawing) return;
    drawing = false;
    hidden.value = canvas.toDataURL("image/png");
    box.dispatchEvent(new Event("change", { bubbles: true }));
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  box.querySelector("[data-signature-clear]").addEventListener("click", () => {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    hidden.value = "";
    box.dispatchEvent(new Event("change", { bubbles: true }));
  });
}

// ---- repeatable groups ----
function renumber(group) {
  const text = group.querySelector("[data-group-add]").dataset.itemText;
  group.querySelectorAll(":scope > [data-group-items] > [data-group-item]").forEach((item, i) => {
    const label = item.querySelector(".group-head strong");
    if (label) label.textContent = text.replace("{n}", String(i + 1));
  });
}

function addItem(group) {
  const items = group.querySelector("[data-group-items]");
  const count = items.querySelectorAll(":scope > [data-group-item]").length;
  if (count >= Number(group.dataset.max || 100)) return;
  const base = group.dataset.group;
  let next = 0;
  items.querySelectorAll("[name]").forEach((c) => {
    const m = c.name.startsWith(base + "[") ? /^\[(\d+)\]/.exec(c.name.slice(base.length)) : null;
    if (m) next = Math.max(next, Number(m[1]) + 1);
  });
  const html = group.querySelector(":scope > template[data-group-template]").innerHTML.replaceAll(group.dataset.placeholder, String(next));
  items.insertAdjacentHTML("beforeend", html);
  renumber(group);
  const added = items.lastElementChild;
  if (window.htmx) window.htmx.process(added);
  added.querySelector("input, select, textarea")?.focus();
  init(added);
  const form = group.closest("form[data-form]");
  if (form) refreshConditions(form);
}

function init(root) {
  paintBadges(root);
  root.querySelectorAll("[data-signature]").forEach(signaturePad);
}

document.addEventListener("DOMContentLoaded", () => {
  init(document);
  document.querySelectorAll("form[data-form]").forEach((form) => {
    refreshConditions(form);
    form.addEventListener("input", () => refreshConditions(form));
    form.addEventListener("change", () => refreshConditions(form));
    form.addEventListener("submit", () => {
      // One tap, one command: the key in the form makes a retry safe, and
      // the button stays disabled until the page changes.
      setTimeout(() => form.querySelectorAll("[data-submit]").forEach((b) => (b.disabled = true)), 0);
    });
  });
  const firstError = document.querySelector(".has-error");
  if (firstError) {
    firstError.scrollIntoView({ block: "center" });
    firstError.querySelector("input:not([type=hidden]), select, textarea, canvas")?.focus({ preventScroll: true });
  }
  document.addEventListener("click", (e) => {
    const t = e.target.closest("button, a");
    if (!t) return;
    if (t.matches(".pick-option")) choose(t.closest("[data-picker]"), t.dataset.pickId, t.dataset.pickTitle, t.dataset.fill);
    else if (t.matches("[data-picker-clear]")) choose(t.closest("[data-picker]"), "", "");
    else if (t.matches("[data-file-remove]")) {
      const li = t.closest("li");
      const box = t.closest("[data-files]");
      const hidden = box.querySelector("[data-files-value]");
      hidden.value = JSON.stringify(JSON.parse(hidden.value || "[]").filter((f) => f.id !== li.dataset.fileId));
      li.remove();
      box.dispatchEvent(new Event("change", { bubbles: true }));
    } else if (t.matches("[data-group-add]")) addItem(t.closest("[data-group]"));
    else if (t.matches("[data-group-remove]")) {
      const group = t.closest("[data-group]");
      const count = group.querySelectorAll(":scope > [data-group-items] > [data-group-item]").length;
      if (count <= Number(group.dataset.min || 0)) return;
      t.closest("[data-group-item]").remove();
      renumber(group);
      group.dispatchEvent(new Event("change", { bubbles: true }));
    } else if (t.matches("[data-geolocate]")) {
      const box = t.closest(".location");
      const status = box.querySelector("[data-geo-status]");
      if (!navigator.geolocation) return;
      navigator.geolocation.getCurrentPosition(
        (p) => {
          box.querySelector("[data-lat]").value = p.coords.latitude;
          box.querySelector("[data-lng]").value = p.coords.longitude;
          box.querySelector("[data-accuracy]").value = p.coords.accuracy;
          status.textContent = `${p.coords.latitude.toFixed(5)}, ${p.coords.longitude.toFixed(5)} (±${Math.round(p.coords.accuracy)} m)`;
        },
        (err) => (status.textContent = err.message),
        { enableHighAccuracy: true, timeout: 10000 },
      );
    }
  });
  document.addEventListener("change", (e) => {
    if (e.target.matches("[data-files-input]")) {
      const box = e.target.closest("[data-files]");
      [...e.target.files].reduce((p, f) => p.then(() => upload(box, f)), Promise.resolve()).then(() => (e.target.value = ""));
    } else if (e.target.matches("[data-autosubmit]")) e.target.form.requestSubmit();
  });
  document.body.addEventListener("htmx:afterSwap", (e) => init(e.target));
  // A search answer that arrives after a record was chosen is dropped.
  document.body.addEventListener("htmx:beforeSwap", (e) => {
    const picker = e.detail.target?.closest?.("[data-picker]");
    if (picker && picker.querySelector("[data-picker-search]").hidden) e.detail.shouldSwap = false;
  });
});
