// Turning API values into words and numbers a person reads.

const ACTIVE_STATES = new Set(["pending", "listing", "importing"]);

const STATE_LABELS = {
  pending: "Pending",
  listing: "Listing files",
  importing: "Importing",
  succeeded: "Succeeded",
  completed_with_failures: "Completed with failures",
  failed: "Failed",
  cancelled: "Cancelled",
};

const PROVIDER_LABELS = { gdrive: "Google Drive", dropbox: "Dropbox" };

export const isActive = (state) => ACTIVE_STATES.has(state);
export const isTerminal = (state) => Boolean(state) && !ACTIVE_STATES.has(state);
export const stateLabel = (state) => STATE_LABELS[state] ?? String(state ?? "Unknown");
export const providerLabel = (provider) => PROVIDER_LABELS[provider] ?? String(provider ?? "");

const numberFormat = new Intl.NumberFormat();
const decimalFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

export function formatCount(value) {
  return numberFormat.format(Number(value) || 0);
}

export function plural(count, singular, pluralForm = `${singular}s`) {
  return `${formatCount(count)} ${count === 1 ? singular : pluralForm}`;
}

// Decimal units, like the MB/s of the rate.
const BYTE_UNITS = ["B", "kB", "MB", "GB", "TB"];

export function formatBytes(value) {
  let size = Number(value);
  if (!Number.isFinite(size) || size < 0) return "—";
  let unit = 0;
  while (size >= 1000 && unit < BYTE_UNITS.length - 1) {
    size /= 1000;
    unit += 1;
  }
  const digits = unit === 0 || size >= 100 ? 0 : 1;
  return `${size.toFixed(digits)} ${BYTE_UNITS[unit]}`;
}

export function formatRate(rate) {
  if (!rate) return "—";
  const files = decimalFormat.format(Number(rate.files_per_second) || 0);
  const megabytes = (Number(rate.bytes_per_second) || 0) / 1e6;
  // Small folders move well under 1 MB/s: keep enough digits not to show a flat 0.
  const digits = megabytes >= 10 ? 0 : megabytes >= 1 ? 1 : 2;
  const speed = new Intl.NumberFormat(undefined, { maximumFractionDigits: digits });
  return `${files} files/s · ${speed.format(megabytes)} MB/s`;
}

export function formatPercent(progress) {
  if (progress === null || progress === undefined) return "—";
  // Floor, so 100% only shows once everything is settled.
  const percent = progress >= 1 ? 100 : Math.floor(Math.max(0, progress) * 100);
  return `${percent}%`;
}

function parseDate(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  dateStyle: "medium",
  timeStyle: "short",
});

export function formatDateTime(value) {
  const date = parseDate(value);
  return date ? dateTimeFormat.format(date) : "—";
}

const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const RELATIVE_STEPS = [
  [60, "second"],
  [60, "minute"],
  [24, "hour"],
  [7, "day"],
  [4.35, "week"],
  [12, "month"],
  [Infinity, "year"],
];

export function formatRelative(value, now = Date.now()) {
  const date = parseDate(value);
  if (!date) return "";
  let amount = (date.getTime() - now) / 1000;
  if (Math.abs(amount) < 45) return "just now";
  for (const [size, unit] of RELATIVE_STEPS) {
    if (Math.abs(amount) < size) return relativeFormat.format(Math.round(amount), unit);
    amount /= size;
  }
  return dateTimeFormat.format(date);
}

/** A folder link without its scheme and tracking query, for compact display. */
export function shortUrl(value) {
  try {
    const url = new URL(value);
    return `${url.host}${url.pathname}`.replace(/\/$/, "");
  } catch {
    return String(value ?? "");
  }
}
