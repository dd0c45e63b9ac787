// The thumbnail grid: cursor pagination, infinite scroll, and a filter by import.

import { allowTokenPrompt, api, authorizedObjectUrl, getToken } from "./api.js";
import { byId, h, replaceChildren, safeUrl } from "./dom.js";
import { plural } from "./format.js";

// Start fetching the next page well before the sentinel scrolls into view.
const PREFETCH_MARGIN = "800px 0px";
// A thumbnail link that answered a placeholder (its thumbnail not made yet) is asked again.
const PLACEHOLDER_RETRIES = 10;
const PLACEHOLDER_RETRY_MS = 3000;

export class Gallery {
  /** onOpen(index): a thumbnail was activated. */
  constructor({ onOpen = () => {} } = {}) {
    this.onOpen = onOpen;
    this.grid = byId("gallery-grid");
    this.status = byId("gallery-status");
    this.sentinel = byId("gallery-sentinel");
    this.count = byId("gallery-count");
    this.importId = "";
    this.items = [];
    this.cursor = null;
    this.done = false;
    this.error = null;
    this.loading = null;
    this.generation = 0;
    this.objectUrls = [];

    this.pager = new IntersectionObserver(
      (entries) => {
        if (entries.some((entry) => entry.isIntersecting)) this.loadMore();
      },
      { rootMargin: PREFETCH_MARGIN },
    );
    this.pager.observe(this.sentinel);
    // With a token, thumbnails are fetched by script; this does what loading="lazy" would.
    this.lazyLoader = new IntersectionObserver((entries) => this.loadVisible(entries), {
      rootMargin: "400px 0px",
    });

    this.grid.addEventListener("click", (event) => {
      const button = event.target.closest("button.thumb");
      if (!button) return;
      const index = this.indexOf(button.dataset.id);
      if (index >= 0) this.onOpen(index);
    });
  }

  indexOf(id) {
    return this.items.findIndex((image) => String(image.id) === String(id));
  }

  setFilter(importId) {
    if (importId === this.importId) return;
    this.importId = importId;
    this.reload();
  }

  reload() {
    this.generation += 1;
    this.items = [];
    this.cursor = null;
    this.done = false;
    this.error = null;
    this.loading = null;
    this.lazyLoader.disconnect();
    for (const url of this.objectUrls) URL.revokeObjectURL(url);
    this.objectUrls = [];
    replaceChildren(this.grid);
    return this.loadMore();
  }

  /** Fetch the next page (if any); resolves once it is on screen. */
  async loadMore() {
    if (this.loading) return this.loading;
    if (this.done || this.error) return undefined;
    const { generation } = this;
    this.renderStatus(true);
    this.loading = (async () => {
      try {
        const page = await api.listImages({ cursor: this.cursor, importId: this.importId });
        if (generation !== this.generation) return;
        this.add(page.items);
        this.cursor = page.next_cursor;
        this.done = !page.next_cursor;
      } catch (error) {
        if (generation === this.generation) this.error = error;
      } finally {
        if (generation === this.generation) {
          this.loading = null;
          this.renderStatus(false);
        }
      }
    })();
    await this.loading;
    // A short page on a tall screen leaves the sentinel in view, and the observer only
    // reports changes: keep filling until the screen is full.
    if (generation === this.generation && !this.done && !this.error && this.sentinelNearView()) {
      return this.loadMore();
    }
    return undefined;
  }

  /** Put images imported since the first page was loaded at the top, keeping the scroll. */
  async refreshNewest() {
    if (this.loading) await this.loading;
    if (this.items.length === 0) {
      this.error = null;
      this.done = false;
      return this.reload();
    }
    const { generation } = this;
    try {
      const page = await api.listImages({ importId: this.importId });
      if (generation !== this.generation || this.loading) return undefined;
      // Not just ids above the newest shown: workers commit concurrently, so an image can
      // appear after one with a higher id was already shown.
      const shown = new Set(this.items.map((image) => String(image.id)));
      const fresh = page.items.filter((image) => !shown.has(String(image.id)));
      // A whole page of new images may hide a gap behind it: start over rather than guess.
      if (fresh.length === page.items.length && page.next_cursor) return this.reload();
      for (const image of fresh) this.insert(image);
      if (fresh.length > 0) this.renderStatus(false);
    } catch {
      // The next update or a reload will try again; the shown images are still right.
    }
    return undefined;
  }

  /** One image in its place: the grid is ordered newest (highest id) first. */
  insert(image) {
    const id = Number(image.id);
    let at = this.items.findIndex((shown) => Number(shown.id) < id);
    if (at === -1) at = this.items.length;
    this.items.splice(at, 0, image);
    this.grid.insertBefore(this.tile(image), this.grid.children[at] ?? null);
  }

  add(images) {
    // A later page can repeat an image the refresh already put in place.
    const shown = new Set(this.items.map((image) => String(image.id)));
    const fresh = images.filter((image) => !shown.has(String(image.id)));
    this.items.push(...fresh);
    this.grid.append(...fresh.map((image) => this.tile(image)));
  }

  tile(image) {
    const name = String(image.name ?? "");
    const source = safeUrl(image.links?.thumbnail);
    const img = h("img", {
      alt: name,
      loading: "lazy",
      decoding: "async",
      width: 400,
      height: 400,
      draggable: "false",
    });
    const button = h(
      "button",
      { type: "button", class: "thumb", dataset: { id: String(image.id) }, title: name },
      img,
      h("span", { class: "thumb__caption" }, name),
    );
    const item = h("li", { class: "grid__item" }, button);
    this.showState(item, image.state);
    let retries = 0;
    img.addEventListener("load", () => {
      item.classList.add("grid__item--loaded");
      // Imported in lean mode: this request made its thumbnail (or found it corrupt), or
      // answered a placeholder when it could not yet; ask again a little later then.
      if (item.dataset.state !== "unverified") return;
      this.refreshState(item, image.id).then((state) => {
        if (state === "unverified" && retries < PLACEHOLDER_RETRIES) {
          retries += 1;
          setTimeout(() => this.show(img, `${source}?attempt=${retries}`), PLACEHOLDER_RETRY_MS);
        }
      });
    });
    img.addEventListener("error", () => item.classList.add("grid__item--broken"));
    if (!source) item.classList.add("grid__item--broken");
    else if (getToken()) {
      img.dataset.source = source;
      this.lazyLoader.observe(img);
    } else img.src = source;
    return item;
  }

  /** The image's state on its tile: a badge says when it is corrupt. */
  showState(item, state) {
    item.dataset.state = String(state ?? "ready");
    const button = item.querySelector("button.thumb");
    const shown = button.querySelector(".thumb__state");
    if (state === "corrupt" && !shown) {
      button.append(h("span", { class: "badge badge--small thumb__state", dataset: { state } }, "Corrupt"));
    }
  }

  /** Read the image's state again (after its thumbnail was asked for); resolves to it. */
  async refreshState(item, id) {
    try {
      const image = await api.getImage(id);
      this.showState(item, image.state);
      const index = this.indexOf(id);
      if (index >= 0) this.items[index] = image;
      return image.state;
    } catch {
      return item.dataset.state;
    }
  }

  /** Point the <img> at `path` (through an object URL when a token is needed). */
  async show(img, path) {
    try {
      const url = await this.imageUrl(path);
      if (getToken()) this.objectUrls.push(url);
      img.src = url;
    } catch {
      img.closest(".grid__item")?.classList.add("grid__item--broken");
    }
  }

  async loadVisible(entries) {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      const img = entry.target;
      this.lazyLoader.unobserve(img);
      await this.show(img, img.dataset.source);
    }
  }

  /** A URL an <img> can show: the link itself, or an object URL when a token is needed. */
  async imageUrl(path) {
    return getToken() ? authorizedObjectUrl(path) : path;
  }

  focusTile(id) {
    const button = this.grid.querySelector(`button.thumb[data-id="${CSS.escape(String(id))}"]`);
    if (!button) return;
    button.scrollIntoView({ block: "nearest" });
    button.focus({ preventScroll: true });
  }

  sentinelNearView() {
    const top = this.sentinel.getBoundingClientRect().top;
    return top < window.innerHeight + 800;
  }

  renderStatus(loading) {
    const { status, count } = this;
    count.textContent = this.done && this.items.length > 0 ? `(${this.items.length})` : "";
    if (loading) {
      replaceChildren(
        status,
        h(
          "p",
          { class: "state-note" },
          h("span", { class: "spinner", "aria-hidden": "true" }),
          this.items.length ? "Loading more images…" : "Loading images…",
        ),
      );
      return;
    }
    if (this.error) {
      replaceChildren(
        status,
        h(
          "div",
          { class: "state-panel state-panel--error", role: "alert" },
          h("p", { class: "state-panel__title" }, "Could not load images"),
          h("p", { class: "state-panel__text" }, this.error.message),
          h(
            "button",
            {
              type: "button",
              class: "btn btn--secondary btn--small",
              onclick: () => {
                allowTokenPrompt();
                this.error = null;
                this.loadMore();
              },
            },
            "Try again",
          ),
        ),
      );
      return;
    }
    if (this.items.length === 0 && this.done) {
      replaceChildren(
        status,
        h(
          "div",
          { class: "state-panel state-panel--empty" },
          emptyIcon(),
          h(
            "p",
            { class: "state-panel__title" },
            this.importId ? "No images from this import yet" : "No images yet — import a folder above",
          ),
          h(
            "p",
            { class: "state-panel__text" },
            this.importId
              ? "Images appear here as soon as they are imported."
              : "Paste a Google Drive or Dropbox folder link and press Import.",
          ),
        ),
      );
      return;
    }
    if (this.done) {
      replaceChildren(
        status,
        h("p", { class: "state-note state-note--end" }, `That’s all — ${plural(this.items.length, "image")}.`),
      );
      return;
    }
    replaceChildren(status);
  }
}

function emptyIcon() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 48 48");
  svg.setAttribute("class", "state-panel__icon");
  svg.setAttribute("aria-hidden", "true");
  const shapes = [
    ["rect", { x: "5", y: "9", width: "38", height: "30", rx: "6" }],
    ["circle", { cx: "17", cy: "20", r: "4" }],
    ["path", { d: "M7 35l11-10 7 6 7-8 11 11" }],
  ];
  for (const [tag, attributes] of shapes) {
    const shape = document.createElementNS(ns, tag);
    for (const [key, value] of Object.entries(attributes)) shape.setAttribute(key, value);
    svg.append(shape);
  }
  return svg;
}
