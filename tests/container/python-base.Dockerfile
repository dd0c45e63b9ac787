# A stand-in for the official python:3.11-slim, built from a local Debian bookworm rootfs
# (debootstrap) because the container tests cannot assume a reachable registry. Bookworm's
# python3 is 3.11; python-is-python3 puts `python` on PATH as the official image does.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python3-pip python-is-python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
CMD ["python3"]
