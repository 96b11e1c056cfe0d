# rankd: one process, data on a volume. Build: docker build -t rankd .
# Run (keys are required: the container listens on 0.0.0.0, and rankd refuses a public bind
# without them -- "protected mode"):
#   docker run -p 8000:8000 -v rankd-data:/data \
#     -e RANKD_API_KEYS='<long-random-key>:read,write,sessions;<another-key>:admin' rankd
# Stop with `docker stop --time 60` (or stop_grace_period) on big data sets: SIGTERM drains
# requests and writes a final snapshot before the process exits.

FROM python:3.11-slim AS build
# "[redis]" adds the redis backend's client (compose.yaml builds it that way).
ARG RANKD_EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY store ./store
COPY service ./service
RUN pip install --no-cache-dir --root-user-action=ignore --prefix=/install ".${RANKD_EXTRAS}"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RANKD_PORT=8000
COPY --from=build /install /usr/local
# A fixed non-root uid, so a host directory mounted at /data can be chowned to match.
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin rankd \
    && mkdir -p /data && chown rankd:rankd /data
USER rankd
WORKDIR /data
VOLUME /data
EXPOSE 8000
# /healthz needs no key and answers while the process runs (readiness is /readyz).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; r = u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('RANKD_PORT', '8000'), timeout=2); sys.exit(0 if r.status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["rankd", "--host", "0.0.0.0", "--data-dir", "/data"]
