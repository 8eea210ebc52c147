# procreche: one image for the gateway (`procreche serve --no-worker`), the persistence
# worker (`procreche worker`) and one-shot commands (`procreche migrate`, `procreche drain`).
# See docker-compose.yml and docs/operations.md §11.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the wheel is built from (pyproject.toml names README.md as its readme and
# force-includes schema.sql).
COPY pyproject.toml README.md schema.sql ./
COPY realtime ./realtime
COPY gateway ./gateway
COPY workers ./workers
RUN pip install . && rm -rf /src

# Never root. The data folder only matters if a server URL is missing (embedded servers,
# not for production) or for the demo password.
RUN useradd --system --create-home --home-dir /home/procreche --uid 10001 --shell /usr/sbin/nologin procreche
USER procreche
WORKDIR /home/procreche
ENV PROCRECHE_DATA=/home/procreche/var \
    PROCRECHE_HOST=0.0.0.0 \
    PROCRECHE_PORT=8000

# Health: GET /healthz (200 ok or degraded without postgres, 503 without redis); docker-compose.yml checks it.
EXPOSE 8000
CMD ["procreche", "serve", "--no-worker"]
