# rankd: one process, data on a volume. Build: docker build -t rankd .
# Configured like its peers: every setting comes from the environment (RANKD_*, README
# "Settings"), and arguments after the image name only override, e.g.
#   docker run -p 8000:8000 -v rankd-data:/data \
#     -e RANKD_API_KEYS_FILE=/run/secrets/rankd_keys --stop-timeout 60 rankd --log-format json
# Keys are required: the container listens on 0.0.0.0, and rankd refuses a public bind without
# them ("protected mode"). Any RANKD_<NAME>_FILE reads that setting from a file (secrets).
# Stop grace: SIGTERM drains requests (--shutdown-grace, 5 s) and writes a final snapshot
# before the process exits; Docker's default 10 s is too short for large data sets, so give
# `docker stop --time 60` / `--stop-timeout 60` / compose `stop_grace_period: 60s` /
# Kubernetes `terminationGracePeriodSeconds: 60` (deploy/compose.yaml sets it).

FROM python:3.11-slim AS build
# "[redis]" adds the redis backend's client (compose.yaml builds it that way).
ARG RANKD_EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY store ./store
COPY service ./service
# constraints.txt pins every runtime dependency and the build backend: two builds of one
# commit install the same code (PIP_CONSTRAINT reaches pip's isolated build environment too).
# DL3013 cannot see that: it reads ".${RANKD_EXTRAS}" as an unpinned package name.
# hadolint ignore=DL3013
RUN PIP_CONSTRAINT=/src/constraints.txt \
    pip install --no-cache-dir --root-user-action=ignore --prefix=/install ".${RANKD_EXTRAS}"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RANKD_HOST=0.0.0.0 \
    RANKD_PORT=8000 \
    RANKD_DATA_DIR=/data
COPY --from=build /install /usr/local
# A fixed non-root uid, so a host directory mounted at /data can be chowned to match.
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin rankd \
    && mkdir -p /data && chown rankd:rankd /data
USER 10001:10001
WORKDIR /data
VOLUME /data
EXPOSE 8000
# /healthz needs no key and answers while the process runs (readiness is /readyz).
# `rankd healthcheck` reads PID 1's own flags and environment, so it follows the port however
# it was set (RANKD_PORT, --port, RANKD_PORT_FILE).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["rankd", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["rankd"]
