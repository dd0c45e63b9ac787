# syntax=docker/dockerfile:1
# One image for every component: `imageimport api|worker|operator|migrate|...`.
#   docker build -t imageimport .
#   docker run --rm -p 8000:8000 -e NATS_URL=... -e DATABASE_URL=... imageimport

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: build the project's wheel and install it with its dependencies into a venv --------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
RUN python -m venv /opt/imageimport
COPY pyproject.toml README.md ./
COPY src ./src
# The runtime dependencies only: no dev extras (test servers, linters) in the image.
RUN python -m pip wheel --no-deps --wheel-dir /build/wheels . \
 && /opt/imageimport/bin/python -m pip install /build/wheels/imageimport-*.whl

# --- final: the venv on a clean slim base, running as an unprivileged user ---------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="imageimport" \
      org.opencontainers.image.description="Import images from shared Google Drive and Dropbox folders into S3" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 imageimport \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin imageimport
COPY --from=builder /opt/imageimport /opt/imageimport
# DATA_DIR and TMPDIR under /tmp: the only writable place when the root filesystem is read-only
# (the chart mounts an emptyDir there).
ENV PATH=/opt/imageimport/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/tmp/data \
    TMPDIR=/tmp \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000 8081
ENTRYPOINT ["imageimport"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
