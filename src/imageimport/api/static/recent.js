// The recent imports list and the gallery's "show images from" select, both fed by
// GET /api/v1/imports.

import { allowTokenPrompt, api } from "./api.js";
import { byId, h, replaceChildren, show } from "./dom.js";
import {
  formatCount,
  formatDateTime,
  formatRelative,
  isActive,
  plural,
  providerLabel,
  shortUrl,
  stateLabel,
} from "./format.js";

const RECENT_LIMIT = 10;

export class RecentImports {
  /** onSelect(id): an import was picked from the list. */
  constructor({ onSelect = () => {} } = {}) {
    this.onSelect = onSelect;
    this.list = byId("recent-list");
    this.status = byId("recent-status");
    this.select = byId("gallery-filter");
    this.items = [];
    this.currentId = null;
    this.loading = null;
    byId("recent-refresh").addEventListener("click", () => {
      allowTokenPrompt();
      this.refresh();
    });
    this.list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-id]");
      if (button) this.onSelect(button.dataset.id);
    });
    // Relative times ("2 minutes ago") go stale; only their text is redrawn, so focus stays.
    setInterval(() => {
      for (const time of this.list.querySelectorAll("time[datetime]")) {
        time.textContent = formatRelative(time.getAttribute("datetime"));
      }
    }, 30000);
  }

  /** Reload the list; resolves to the imports (newest first), or [] after an error. */
  refresh() {
    if (this.loading) return this.loading;
    this.loading = (async () => {
      try {
        const page = await api.listImports(RECENT_LIMIT);
        this.items = page.items;
        this.render();
        this.renderFilter();
        return this.items;
      } catch (error) {
        this.status.textContent = `Could not load recent imports: ${error.message}`;
        this.status.classList.add("state-note--error");
        show(this.status);
        return [];
      } finally {
        this.loading = null;
      }
    })();
    return this.loading;
  }

  /** A fresh snapshot of one import (from the progress view). */
  update(snapshot) {
    const index = this.items.findIndex((item) => item.id === snapshot.id);
    if (index < 0) {
      this.refresh();
      return;
    }
    const before = this.items[index];
    this.items[index] = snapshot;
    const changed =
      before.state !== snapshot.state ||
      before.counters?.imported !== snapshot.counters?.imported ||
      before.counters?.failed !== snapshot.counters?.failed;
    if (changed) {
      this.render();
      this.renderFilter();
    }
  }

  setCurrent(id) {
    this.currentId = id;
    for (const button of this.list.querySelectorAll("button[data-id]")) {
      if (button.dataset.id === id) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
  }

  render() {
    this.status.classList.remove("state-note--error");
    if (this.items.length === 0) {
      this.status.textContent = "No imports yet. Your imports will be listed here.";
      show(this.status);
      replaceChildren(this.list);
      return;
    }
    show(this.status, false);
    replaceChildren(
      this.list,
      this.items.map((item) => h("li", {}, this.entry(item))),
    );
  }

  entry(item) {
    const counters = item.counters ?? {};
    const summary = [providerLabel(item.provider), plural(counters.imported ?? 0, "image")];
    if (counters.duplicates) summary.push(plural(counters.duplicates, "duplicate"));
    if (counters.unchanged) summary.push(`${formatCount(counters.unchanged)} unchanged`);
    if (counters.failed) summary.push(`${formatCount(counters.failed)} failed`);
    return h(
      "button",
      {
        type: "button",
        class: "recent__item",
        dataset: { id: item.id },
        "aria-current": item.id === this.currentId ? "true" : null,
      },
      h(
        "span",
        { class: "recent__top" },
        h(
          "span",
          { class: "badge badge--small", dataset: { state: item.state } },
          stateLabel(item.state),
        ),
        h(
          "time",
          {
            class: "recent__when",
            datetime: item.created_at ?? "",
            title: formatDateTime(item.created_at),
          },
          formatRelative(item.created_at),
        ),
      ),
      h("span", { class: "recent__url", title: String(item.url ?? "") }, shortUrl(item.url)),
      h("span", { class: "recent__meta" }, summary.join(" · ")),
    );
  }

  renderFilter() {
    const chosen = this.select.value;
    const existing = [...this.select.options].slice(1);
    const sameImports =
      existing.length === this.items.length &&
      existing.every((option, index) => option.value === this.items[index].id);
    if (sameImports) {
      // Relabel in place: rebuilding would close the select if someone has it open.
      existing.forEach((option, index) => {
        option.textContent = optionLabel(this.items[index]);
      });
      return;
    }
    const options = [h("option", { value: "" }, "All imports")];
    for (const item of this.items) options.push(h("option", { value: item.id }, optionLabel(item)));
    // An older import chosen before it dropped out of the list stays selectable.
    if (chosen && !this.items.some((item) => item.id === chosen)) {
      const kept = [...this.select.options].find((option) => option.value === chosen);
      if (kept) options.push(h("option", { value: chosen }, kept.textContent));
    }
    replaceChildren(this.select, options);
    this.select.value = chosen;
  }
}

function optionLabel(item) {
  const when = formatDateTime(item.created_at);
  const running = isActive(item.state) ? " (running)" : "";
  return `${providerLabel(item.provider)} · ${when} · ${plural(item.counters?.imported ?? 0, "image")}${running}`;
}
