// Wires the page together: the import form, the progress view, recent imports, the gallery
// and the lightbox.

import { api, setTokenPrompt } from "./api.js";
import { byId, show } from "./dom.js";
import { isActive } from "./format.js";
import { Gallery } from "./gallery.js";
import { Lightbox } from "./lightbox.js";
import { ProgressView } from "./progress.js";
import { RecentImports } from "./recent.js";

// New images are pulled into the gallery at most this often while an import runs.
const GALLERY_REFRESH_MS = 1500;

const form = byId("import-form");
const input = byId("folder-url");
const submit = byId("import-submit");
const fieldError = byId("folder-url-error");

const gallery = new Gallery({ onOpen: (index) => lightbox.open(index) });
const lightbox = new Lightbox(gallery);
const recent = new RecentImports({ onSelect: (id) => openImport(id, { focus: true }) });
const filter = byId("gallery-filter");

let galleryTimer = null;
const lastSettled = new Map(); // import id -> images found so far, to spot new ones

const progress = new ProgressView({
  onUpdate(snapshot) {
    recent.update(snapshot);
    const counters = snapshot.counters ?? {};
    const found =
      (counters.imported ?? 0) + (counters.duplicates ?? 0) + (counters.unchanged ?? 0);
    if (found !== lastSettled.get(snapshot.id)) {
      lastSettled.set(snapshot.id, found);
      if (!filter.value || filter.value === snapshot.id) scheduleGalleryRefresh();
    }
  },
  onFinished() {
    recent.refresh();
    scheduleGalleryRefresh(0);
  },
});

function scheduleGalleryRefresh(delay = GALLERY_REFRESH_MS) {
  if (galleryTimer !== null && delay > 0) return;
  clearTimeout(galleryTimer);
  galleryTimer = setTimeout(() => {
    galleryTimer = null;
    gallery.refreshNewest();
  }, delay);
}

function openImport(id, options = {}) {
  progress.open(id, options);
  recent.setCurrent(id);
  const hash = `#import=${encodeURIComponent(id)}`;
  if (window.location.hash !== hash) window.history.replaceState(null, "", hash);
}

function importFromHash() {
  const match = /^#import=(.+)$/.exec(window.location.hash);
  if (!match) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return null;
  }
}

function setFieldError(message) {
  fieldError.textContent = message;
  show(fieldError, Boolean(message));
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const url = input.value.trim();
  if (!url) {
    setFieldError("Paste the link of a Google Drive or Dropbox folder first.");
    input.focus();
    return;
  }
  setFieldError("");
  submit.disabled = true;
  submit.textContent = "Starting…";
  form.setAttribute("aria-busy", "true");
  try {
    const created = await api.createImport(url, byId("import-mode").value);
    input.value = "";
    openImport(created.id, { focus: true });
    progress.apply(created);
    recent.refresh();
  } catch (error) {
    setFieldError(error.message);
    input.focus();
  } finally {
    submit.disabled = false;
    submit.textContent = "Import";
    form.removeAttribute("aria-busy");
  }
});

input.addEventListener("input", () => {
  if (!fieldError.hidden) setFieldError("");
});

filter.addEventListener("change", () => gallery.setFilter(filter.value));

// -- API token prompt ------------------------------------------------------------------------

const tokenDialog = byId("token-dialog");
const tokenInput = byId("token-input");

setTokenPrompt(
  (message) =>
    new Promise((resolve) => {
      byId("token-message").textContent = message;
      tokenInput.value = "";
      tokenDialog.returnValue = "";
      tokenDialog.addEventListener(
        "close",
        () => resolve(tokenDialog.returnValue === "save" ? tokenInput.value : null),
        { once: true },
      );
      tokenDialog.showModal();
      tokenInput.focus();
    }),
);
byId("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  tokenDialog.close("save");
});
byId("token-cancel").addEventListener("click", () => tokenDialog.close(""));

// -- start -----------------------------------------------------------------------------------

async function start() {
  const imports = await recent.refresh();
  const wanted = importFromHash();
  if (wanted) openImport(wanted);
  else if (imports[0] && isActive(imports[0].state)) openImport(imports[0].id);
  gallery.reload();
}

document.documentElement.classList.add("js");
start();
