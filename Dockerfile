# fireworks-watcher container image.
#
#   docker build -t fireworks-watcher:0.1.0 .
#   docker run -d --name fireworks-watcher \
#     -v "$PWD/watcher.toml:/etc/fireworks-watcher/watcher.toml:ro" \
#     -v fireworks-watcher-state:/var/lib/fireworks-watcher \
#     --env-file watcher.env -p 127.0.0.1:9464:9464 fireworks-watcher:0.1.0
#
# Two stages: the builder installs the project and its runtime dependencies into a virtualenv;
# the final stage copies only that virtualenv onto the same base, so no build tools, pip cache
# or source tree ship in the image.
#
# The base is pinned by its full version tag. A digest (python:...@sha256:...) would pin it
# byte for byte, but digests cannot be resolved on the machines that write and check this file
# (no registry access): add one when you publish. Bump the tag with Python's security releases.

FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

RUN python -m venv /opt/fireworks-watcher

WORKDIR /src
# Only what the wheel build reads (hatchling: pyproject.toml, README.md as the long
# description, the watcher package and the simulator package, which `fireworks-watcher
# simulate` serves in the compose demo). Tests and dev tools stay out: no `[dev]` extra.
COPY pyproject.toml README.md ./
COPY watcher/ watcher/
COPY fireworks_sim/ fireworks_sim/
# `.` is the project itself: its dependencies are bounded in pyproject.toml, so DL3013
# (pin versions) does not apply to a local path.
RUN /opt/fireworks-watcher/bin/pip install --no-cache-dir .


FROM python:3.11.14-slim-bookworm

LABEL org.opencontainers.image.title="fireworks-watcher" \
      org.opencontainers.image.description="Announce every state change of Fireworks AI fine-tuning jobs through apprise." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT"

# A fixed uid/gid, so volumes, Kubernetes' runAsUser/fsGroup and host directories can match it.
# The state directory belongs to that user, and a fresh named volume inherits that ownership.
RUN groupadd --system --gid 10001 watcher \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin watcher \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/fireworks-watcher

COPY --from=builder /opt/fireworks-watcher /opt/fireworks-watcher

ENV PATH="/opt/fireworks-watcher/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STATE_DIRECTORY=/var/lib/fireworks-watcher \
    FIREWORKS_WATCHER_HEALTH_LISTEN=0.0.0.0:9464

# The SQLite state (state.db and its WAL files). Mount a named volume or a PVC here.
VOLUME ["/var/lib/fireworks-watcher"]

# /healthz, /readyz and /metrics; the daemon listens on nothing else.
EXPOSE 9464

USER 10001:10001

# `healthcheck` GETs the local /healthz (no curl in the image). The first poll cycle may take a
# while on a large account, hence the start period.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["fireworks-watcher", "healthcheck"]

# The config is read from /etc/fireworks-watcher/watcher.toml (mount it), or from the path
# in $FIREWORKS_WATCHER_CONFIG. SIGTERM stops the daemon cleanly (exit 0); SIGHUP reloads it.
ENTRYPOINT ["fireworks-watcher"]
CMD ["run"]
