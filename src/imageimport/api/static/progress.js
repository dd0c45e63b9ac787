// The live progress view of one import: server-sent events when possible, polling otherwise.

import { api, getToken } from "./api.js";
import { byId, h, replaceChildren, safeUrl, show } from "./dom.js";
import {
  formatBytes,
  formatCount,
  formatDateTime,
  formatPercent,
  formatRate,
  isActive,
  isTerminal,
  plural,
  providerLabel,
  shortUrl,
  stateLabel,
} from "./format.js";

const POLL_INTERVAL_MS = 1000;
const POLL_BACKOFF_MAX_MS = 10000;
const COUNTERS = ["discovered", "imported", "duplicates", "unchanged", "skipped", "failed"];

export class ProgressView {
  /**
   * onUpdate(import): every new snapshot; onFinished(import): once it reaches a final state.
   */
  constructor({ onUpdate = () => {}, onFinished = () => {} } = {}) {
    this.onUpdate = onUpdate;
    this.onFinished = onFinished;
    this.el = {
      section: byId("progress"),
      provider: byId("progress-provider"),
      url: byId("progress-url"),
      state: byId("progress-state"),
      bar: byId("progress-bar"),
      fill: byId("progress-fill"),
      percent: byId("progress-percent"),
      live: byId("progress-live"),
      rate: byId("progress-rate"),
      bytes: byId("progress-bytes"),
      current: byId("progress-current"),
      error: byId("progress-error"),
      failedBox: byId("failed-box"),
      failedList: byId("failed-list"),
      failedMore: byId("failed-more"),
      cancel: byId("cancel-button"),
      retry: byId("retry-button"),
      sync: byId("sync-button"),
      syncPrune: byId("sync-prune"),
      syncPruneLabel: byId("sync-prune-label"),
      syncSummary: byId("sync-summary"),
      actionError: byId("action-error"),
    };
    this.counters = Object.fromEntries(COUNTERS.map((name) => [name, byId(`count-${name}`)]));
    this.importId = null;
    this.snapshot = null;
    // Bumped whenever the followed import or connection changes, so late answers are dropped.
    this.generation = 0;
    this.stream = null;
    this.pollTimer = null;
    this.failed = { shownCount: null, loading: false, dirty: false };
    this.el.cancel.addEventListener("click", () => this.cancel());
    this.el.retry.addEventListener("click", () => this.retry());
    this.el.sync.addEventListener("click", () => this.sync());
  }

  /** Show the import `id` and follow its progress until it finishes. */
  open(id, { focus = false } = {}) {
    if (id !== this.importId) {
      this.stop();
      this.importId = id;
      this.snapshot = null;
      this.failed = { shownCount: null, loading: false, dirty: false };
      this.reset();
      this.follow();
    }
    show(this.el.section);
    if (focus) {
      this.el.section.scrollIntoView({ behavior: "smooth", block: "start" });
    }
  }

  stop() {
    this.generation += 1;
    this.closeStream();
    clearTimeout(this.pollTimer);
    this.pollTimer = null;
  }

  reset() {
    this.el.state.textContent = "Connecting…";
    this.el.state.dataset.state = "pending";
    this.el.provider.textContent = "";
    this.el.url.textContent = "";
    this.el.url.removeAttribute("href");
    this.setBar(null, true);
    for (const output of Object.values(this.counters)) {
      output.textContent = "0";
      output.setAttribute("data-zero", "");
    }
    this.el.rate.textContent = "—";
    this.el.bytes.textContent = "—";
    this.el.current.textContent = "—";
    this.el.live.textContent = "";
    show(this.el.error, false);
    show(this.el.failedBox, false);
    show(this.el.cancel, false);
    show(this.el.retry, false);
    show(this.el.sync, false);
    show(this.el.syncPruneLabel, false);
    this.el.syncPrune.checked = false;
    show(this.el.syncSummary, false);
    show(this.el.actionError, false);
  }

  follow() {
    const generation = ++this.generation;
    // EventSource cannot send an Authorization header: with a token, poll instead.
    if (getToken() || typeof EventSource === "undefined") {
      this.poll(generation);
      return;
    }
    const source = new EventSource(api.importEventsUrl(this.importId));
    this.stream = source;
    const receive = (event) => {
      if (generation !== this.generation) return;
      let snapshot;
      try {
        snapshot = JSON.parse(event.data);
      } catch {
        return; // a garbled event: the next one will do
      }
      this.setLive(isActive(snapshot.state) ? "Live" : "");
      this.apply(snapshot);
    };
    source.addEventListener("progress", receive);
    source.addEventListener("end", (event) => {
      receive(event);
      if (generation === this.generation) this.closeStream();
    });
    source.addEventListener("open", () => {
      if (generation === this.generation) this.setLive("Live");
    });
    source.addEventListener("error", () => {
      if (generation !== this.generation) return;
      if (source.readyState === EventSource.CLOSED) {
        // The server refused the stream (a token is needed, the import is gone, …):
        // polling gets a readable answer and handles the token prompt.
        this.closeStream();
        this.poll(generation);
      } else {
        this.setLive("Connection lost — reconnecting…");
      }
    });
  }

  closeStream() {
    if (this.stream) {
      this.stream.close();
      this.stream = null;
    }
  }

  poll(generation, delay = POLL_INTERVAL_MS) {
    const tick = async () => {
      if (generation !== this.generation) return;
      let next = POLL_INTERVAL_MS;
      try {
        const snapshot = await api.getImport(this.importId);
        if (generation !== this.generation) return;
        this.setLive(isActive(snapshot.state) ? "Updating every second" : "");
        this.apply(snapshot);
        if (isTerminal(snapshot.state)) return;
      } catch (error) {
        if (generation !== this.generation) return;
        if (error.status >= 400 && error.status < 500) {
          this.showError(error.message);
          this.setLive("");
          return;
        }
        this.setLive("Connection lost — retrying…");
        next = Math.min(delay * 2, POLL_BACKOFF_MAX_MS);
      }
      this.pollTimer = setTimeout(() => this.poll(generation, next), next);
    };
    tick();
  }

  setLive(text) {
    this.el.live.textContent = text;
    this.el.live.dataset.live = text === "Live" ? "on" : "off";
  }

  showError(message) {
    this.el.error.textContent = message;
    show(this.el.error);
  }

  apply(snapshot) {
    const previous = this.snapshot;
    this.snapshot = snapshot;
    this.render(snapshot);
    this.onUpdate(snapshot);
    if (isTerminal(snapshot.state) && !(previous && isTerminal(previous.state))) {
      this.onFinished(snapshot);
    }
  }

  render(snapshot) {
    const { el } = this;
    const counters = snapshot.counters ?? {};
    el.provider.textContent = providerLabel(snapshot.provider);
    el.url.textContent = shortUrl(snapshot.url);
    el.url.title = String(snapshot.url ?? "");
    const href = safeUrl(snapshot.url);
    if (href) el.url.href = href;
    else el.url.removeAttribute("href");

    el.state.textContent = stateLabel(snapshot.state);
    el.state.dataset.state = snapshot.state;
    this.setBar(snapshot.progress, isActive(snapshot.state), snapshot.state);

    for (const name of COUNTERS) {
      const output = this.counters[name];
      output.textContent = formatCount(counters[name]);
      output.toggleAttribute("data-zero", !counters[name]);
    }
    el.rate.textContent = snapshot.started_at ? formatRate(snapshot.rate) : "—";
    el.bytes.textContent = formatBytes(counters.bytes ?? 0);
    el.current.textContent = snapshot.current_file || "—";
    el.current.title = snapshot.current_file || "";

    if (snapshot.error) this.showError(snapshot.error);
    else show(el.error, false);

    show(el.cancel, isActive(snapshot.state));
    show(el.retry, isTerminal(snapshot.state) && (counters.failed ?? 0) > 0);
    // Shown once the import has finished; while a round (or the import) runs, disabled.
    const syncable = isTerminal(snapshot.state) || Boolean(snapshot.last_sync);
    show(el.sync, syncable);
    show(el.syncPruneLabel, syncable);
    el.sync.disabled = !isTerminal(snapshot.state);
    el.syncPrune.disabled = !isTerminal(snapshot.state);
    el.syncSummary.textContent = syncSummary(snapshot.last_sync);
    show(el.syncSummary, Boolean(snapshot.last_sync));

    if ((counters.failed ?? 0) !== this.failed.shownCount) this.loadFailed();
  }

  setBar(progress, active, state = "") {
    const { bar, fill, percent } = this.el;
    const unknown = progress === null || progress === undefined;
    bar.classList.toggle("meter__track--indeterminate", unknown && active);
    bar.dataset.state = state;
    if (unknown) {
      fill.style.width = active ? "" : "0%";
      bar.removeAttribute("aria-valuenow");
      bar.setAttribute("aria-valuetext", active ? "Counting files…" : "No progress");
      percent.textContent = active ? "Counting…" : "—";
      return;
    }
    const value = Math.min(Math.max(progress, 0), 1);
    fill.style.width = `${value * 100}%`;
    const label = formatPercent(value);
    bar.setAttribute("aria-valuenow", String(Number.parseInt(label, 10)));
    bar.setAttribute("aria-valuetext", label);
    percent.textContent = label;
  }

  async loadFailed(cursor = null) {
    const count = this.snapshot?.counters?.failed ?? 0;
    if (!cursor && this.failed.loading) {
      this.failed.dirty = true; // load again once the current load is done
      return;
    }
    if (count === 0) {
      this.failed.shownCount = 0;
      replaceChildren(this.el.failedList);
      show(this.el.failedBox, false);
      return;
    }
    const { generation } = this;
    const id = this.importId;
    this.failed.loading = true;
    this.failed.dirty = false;
    try {
      const page = await api.failedItems(id, cursor);
      if (generation !== this.generation || id !== this.importId) return;
      if (!cursor) {
        this.failed.shownCount = count;
        replaceChildren(this.el.failedList);
      }
      this.el.failedList.append(...page.items.map(failedItem));
      this.showMoreFailed(page.next_cursor);
      show(this.el.failedBox, this.el.failedList.childElementCount > 0);
    } catch (error) {
      if (generation !== this.generation) return;
      this.failed.shownCount = count;
      replaceChildren(this.el.failedList, h("li", { class: "failed__item" }, error.message));
      show(this.el.failedBox);
    } finally {
      this.failed.loading = false;
      if (this.failed.dirty && generation === this.generation) this.loadFailed();
    }
  }

  showMoreFailed(cursor) {
    const more = this.el.failedMore;
    if (!cursor) {
      show(more, false);
      return;
    }
    replaceChildren(
      more,
      h(
        "button",
        {
          type: "button",
          class: "btn btn--ghost btn--small",
          onclick: () => {
            show(more, false);
            this.loadFailed(cursor);
          },
        },
        "Show more failed files",
      ),
    );
    show(more);
  }

  async cancel() {
    await this.act(this.el.cancel, "Cancelling…", () => api.cancelImport(this.importId));
  }

  async retry() {
    const snapshot = await this.act(this.el.retry, "Retrying…", () =>
      api.retryImport(this.importId),
    );
    // The stream of a finished import has ended: follow the retried one anew.
    if (snapshot) {
      this.stop();
      this.follow();
    }
  }

  async sync() {
    const prune = this.el.syncPrune.checked;
    const snapshot = await this.act(this.el.sync, "Syncing…", () =>
      api.syncImport(this.importId, prune),
    );
    if (snapshot) {
      this.el.syncPrune.checked = false;
      this.stop();
      this.follow();
    }
  }

  async act(button, busyText, call) {
    const label = button.textContent;
    button.disabled = true;
    button.textContent = busyText;
    show(this.el.actionError, false);
    try {
      const snapshot = await call();
      if (snapshot?.id === this.importId) this.apply(snapshot);
      return snapshot;
    } catch (error) {
      this.el.actionError.textContent = error.message;
      show(this.el.actionError);
      return null;
    } finally {
      button.textContent = label;
      // The sync button stays disabled while the round it started runs.
      button.disabled = button === this.el.sync && !isTerminal(this.snapshot?.state);
    }
  }
}

/** One line about an import's last sync round. */
function syncSummary(sync) {
  if (!sync) return "";
  if (!sync.finished_at) {
    return `Sync round ${sync.round} started ${formatDateTime(sync.started_at)}: running…`;
  }
  const parts = [
    `${formatCount(sync.added)} added`,
    `${formatCount(sync.changed)} changed`,
    `${formatCount(sync.unchanged)} unchanged`,
    `${formatCount(sync.gone)} gone`,
  ];
  if (sync.prune) parts.push(`${plural(sync.pruned, "image")} deleted`);
  const error = sync.error ? ` ${sync.error}` : "";
  return `Last sync, ${formatDateTime(sync.finished_at)}: ${parts.join(", ")}.${error}`;
}

function failedItem(item) {
  const attempts = Number(item.attempts) || 0;
  return h(
    "li",
    { class: "failed__item" },
    h("span", { class: "failed__path mono", title: item.path ?? item.name ?? "" }, item.path || item.name || "(no name)"),
    h(
      "span",
      { class: "failed__reason" },
      item.reason || "No reason was recorded.",
      attempts > 1 ? h("span", { class: "muted" }, ` (after ${plural(attempts, "attempt")})`) : null,
    ),
  );
}
