# The ecrm worker image: `docker compose up --scale worker=N` runs N of these in one group.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ECRM_DATA_DIR=/var/lib/ecrm

WORKDIR /app
COPY . /app
# Editable: the package finds its clickhouse/ DDL and rules/ through the source tree.
RUN pip install -e /app \
 && useradd --create-home --uid 10001 ecrm \
 && mkdir -p /var/lib/ecrm \
 && chown ecrm /var/lib/ecrm

USER ecrm
CMD ["ecrm", "worker"]
