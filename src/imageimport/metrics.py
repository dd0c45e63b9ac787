"""Prometheus metrics shared by the services (default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ITEMS = Counter(
    "imageimport_items_total", "Files settled by this process, by final state.", ["state"]
)
ITEM_RETRIES = Counter("imageimport_item_retries_total", "Files sent back to the queue to retry.")
BYTES = Counter("imageimport_downloaded_bytes_total", "Bytes downloaded from sources.")
DURATION = Histogram(
    "imageimport_item_duration_seconds",
    "Time to process one file, download to database commit.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
IN_FLIGHT = Gauge("imageimport_items_in_flight", "Files being processed right now.")
