# CareLoop FHIR server image: the same code as `make run`, configured by CARELOOP_* environment variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    CARELOOP_HOST=0.0.0.0 CARELOOP_PORT=8080 CARELOOP_SQLITE_PATH=/data/careloop.db
WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY resources ./resources
COPY consent ./consent
COPY operations ./operations
COPY subscriptions ./subscriptions
COPY terminology ./terminology
RUN pip install . && useradd --system --uid 10001 careloop && mkdir -p /data && chown careloop /data
USER careloop
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/fhir/metadata', timeout=4)"
CMD ["python", "-m", "server", "serve"]
