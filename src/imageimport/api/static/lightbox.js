// The full-size view of one image with its metadata; keyboard and swipe navigation.

import { byId, h, replaceChildren, safeUrl } from "./dom.js";
import { formatBytes, formatCount, formatDateTime, providerLabel } from "./format.js";

const FOCUSABLE = "button:not([disabled]), a[href], input, select, [tabindex]:not([tabindex='-1'])";
const SWIPE_MIN_PX = 50;

export class Lightbox {
  constructor(gallery) {
    this.gallery = gallery;
    this.dialog = byId("lightbox");
    this.image = byId("lightbox-image");
    this.loadingNote = byId("lightbox-loading");
    this.title = byId("lightbox-title");
    this.meta = byId("lightbox-meta");
    this.position = byId("lightbox-position");
    this.prevButton = byId("lightbox-prev");
    this.nextButton = byId("lightbox-next");
    this.closeButton = byId("lightbox-close");
    this.original = byId("lightbox-original");
    this.index = -1;
    this.shownId = null;
    this.opened = false; // open() was called and the close has not been tidied up yet
    this.objectUrls = [];
    this.fetchingMore = false;

    this.prevButton.addEventListener("click", () => this.previous());
    this.nextButton.addEventListener("click", () => this.next());
    this.closeButton.addEventListener("click", () => this.close());
    // On the document, not the dialog: keys must still work if focus fell out of it (a
    // focused button that just got disabled sends focus to <body>).
    document.addEventListener("keydown", (event) => {
      if (this.dialog.open && !event.target.closest?.("#token-dialog")) this.onKey(event);
    });
    this.dialog.addEventListener("close", () => this.onClosed());
    // A click on the backdrop lands on the <dialog> itself.
    this.dialog.addEventListener("click", (event) => {
      if (event.target === this.dialog || event.target.classList.contains("lightbox__stage")) {
        this.close();
      }
    });
    this.trackSwipes();
  }

  open(index) {
    if (!this.dialog.open) {
      this.dialog.showModal();
      document.documentElement.classList.add("has-modal");
      this.opened = true;
    }
    this.show(index);
    this.closeButton.focus();
  }

  close() {
    if (this.dialog.open) this.dialog.close();
    // dialog.close() hands focus straight back to the thumbnail that opened the dialog, and
    // its "close" event only comes a task later (after any key already pressed): tidy up and
    // move focus to the right thumbnail now, not then.
    this.onClosed();
  }

  /** Runs once per close, whichever comes first: close() or the "close" event (the dialog
   * can also be closed by the browser, e.g. a close request such as Android's back). */
  onClosed() {
    // Already done, or the "close" event of a dialog that has been opened again since.
    if (this.dialog.open || !this.opened) return;
    this.opened = false;
    document.documentElement.classList.remove("has-modal");
    const lastShown = this.shownId;
    this.shownId = null; // a picture still loading is not shown any more
    this.index = -1;
    this.releaseObjectUrls();
    this.image.removeAttribute("src");
    // Back to the thumbnail of the image last shown, which may not be the one first opened.
    if (lastShown !== null) this.gallery.focusTile(lastShown);
  }

  previous() {
    if (this.index > 0) this.show(this.index - 1);
  }

  async next() {
    const { gallery } = this;
    if (this.index < gallery.items.length - 1) {
      this.show(this.index + 1);
      return;
    }
    if (gallery.done || this.fetchingMore) return;
    const from = this.index;
    this.fetchingMore = true;
    this.nextButton.setAttribute("aria-busy", "true");
    try {
      await gallery.loadMore();
    } finally {
      this.fetchingMore = false;
      this.nextButton.removeAttribute("aria-busy");
    }
    if (this.dialog.open && this.index === from && from < gallery.items.length - 1) {
      this.show(from + 1);
    } else this.updateNavigation();
  }

  show(index) {
    const image = this.gallery.items[index];
    if (!image) return;
    this.index = index;
    this.shownId = image.id;
    const name = String(image.name ?? "");
    this.title.textContent = name || "(no name)";
    this.image.alt = name;
    this.dialog.dataset.imageId = String(image.id);
    this.renderMeta(image);
    this.updateNavigation();
    this.loadPicture(image);
  }

  async loadPicture(image) {
    const ticket = image.id;
    const thumbnail = safeUrl(image.links?.thumbnail);
    const content = safeUrl(image.links?.content);
    this.releaseObjectUrls();
    this.loadingNote.textContent = "Loading…";
    this.loadingNote.hidden = false;
    this.image.classList.add("lightbox__image--preview");
    // Keep the link focusable throughout (a link without href drops focus to <body>).
    if (content) this.original.href = content;
    try {
      // The thumbnail is usually cached already: show it at once, sharpen when the full
      // image has arrived.
      if (thumbnail) {
        const preview = await this.gallery.imageUrl(thumbnail);
        if (this.shownId !== ticket) return;
        this.track(preview);
        this.image.src = preview;
        this.image.dataset.kind = "thumbnail";
      }
      if (!content) throw new Error("no content link");
      const full = await this.gallery.imageUrl(content);
      if (this.shownId !== ticket) return;
      this.track(full);
      await preload(full);
      if (this.shownId !== ticket) return;
      this.image.src = full;
      this.image.dataset.kind = "content";
      this.image.classList.remove("lightbox__image--preview");
      this.original.href = full;
      this.loadingNote.hidden = true;
    } catch {
      if (this.shownId !== ticket) return;
      this.loadingNote.textContent = "The full image could not be loaded.";
    }
  }

  track(url) {
    if (url.startsWith("blob:")) this.objectUrls.push(url);
  }

  releaseObjectUrls() {
    for (const url of this.objectUrls) URL.revokeObjectURL(url);
    this.objectUrls = [];
  }

  renderMeta(image) {
    const width = Number(image.width);
    const height = Number(image.height);
    const rows = [
      ["Path", image.path],
      ["Size", image.size === null || image.size === undefined ? null : formatBytes(image.size)],
      [
        "Dimensions",
        width && height ? `${formatCount(width)} × ${formatCount(height)} px` : null,
      ],
      ["Format", image.format],
      ["Taken", image.taken_at ? formatDateTime(image.taken_at) : null],
      ["Camera", image.camera],
      ["Source", providerLabel(image.provider)],
      ["Imported", formatDateTime(image.created_at)],
    ];
    replaceChildren(
      this.meta,
      rows.map(([label, value]) => {
        const known = value !== null && value !== undefined && value !== "";
        return h(
          "div",
          { class: "meta__row", dataset: { field: label.toLowerCase() } },
          h("dt", {}, label),
          h("dd", { class: known ? null : "muted" }, known ? String(value) : "Unknown"),
        );
      }),
    );
    const sizeRow = this.meta.querySelector('[data-field="size"] dd');
    if (sizeRow && image.size !== null && image.size !== undefined) {
      sizeRow.title = `${formatCount(image.size)} bytes`;
    }
  }

  updateNavigation() {
    const total = this.gallery.items.length;
    const more = this.gallery.done ? "" : "+";
    this.position.textContent = `${formatCount(this.index + 1)} of ${formatCount(total)}${more}`;
    const focused = document.activeElement;
    this.prevButton.disabled = this.index <= 0;
    this.nextButton.disabled = this.index >= total - 1 && this.gallery.done;
    // A disabled button loses focus: hand it to the other arrow, or the close button.
    if (focused instanceof HTMLButtonElement && focused.disabled) {
      const other = focused === this.prevButton ? this.nextButton : this.prevButton;
      (other.disabled ? this.closeButton : other).focus();
    }
  }

  onKey(event) {
    if (event.key === "Escape") {
      event.preventDefault();
      this.close();
    } else if (event.key === "ArrowLeft") {
      event.preventDefault();
      this.previous();
    } else if (event.key === "ArrowRight") {
      event.preventDefault();
      this.next();
    } else if (event.key === "Tab") {
      this.trapFocus(event);
    }
  }

  // A modal <dialog> already makes the page inert; this also keeps Tab from leaving for
  // the browser's own toolbar, so focus cycles inside the dialog.
  trapFocus(event) {
    const focusable = [...this.dialog.querySelectorAll(FOCUSABLE)].filter(
      (element) => element.getClientRects().length > 0,
    );
    if (focusable.length === 0) return;
    const first = focusable[0];
    const last = focusable[focusable.length - 1];
    const active = document.activeElement;
    if (event.shiftKey && (active === first || !this.dialog.contains(active))) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && (active === last || !this.dialog.contains(active))) {
      event.preventDefault();
      first.focus();
    }
  }

  trackSwipes() {
    let start = null;
    this.dialog.addEventListener(
      "touchstart",
      (event) => {
        start = event.touches.length === 1 ? event.touches[0] : null;
      },
      { passive: true },
    );
    this.dialog.addEventListener("touchend", (event) => {
      if (!start) return;
      const touch = event.changedTouches[0];
      const dx = touch.clientX - start.clientX;
      const dy = touch.clientY - start.clientY;
      start = null;
      if (Math.abs(dx) < SWIPE_MIN_PX || Math.abs(dx) < Math.abs(dy) * 1.5) return;
      if (dx < 0) this.next();
      else this.previous();
    });
  }
}

function preload(url) {
  return new Promise((resolve, reject) => {
    const probe = new Image();
    probe.onload = () => resolve();
    probe.onerror = () => reject(new Error("image failed to load"));
    probe.src = url;
  });
}
