# One image for every part of the hub; compose.yaml runs the parts as services.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY adshub ./adshub
COPY domain ./domain
COPY bots ./bots
COPY journal ./journal
COPY router ./router
COPY channels ./channels
COPY inbox ./inbox
COPY app ./app
COPY templates ./templates
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home /app adshub \
    && mkdir -p /app/var && chown adshub /app/var

USER adshub
ENV ADSHUB_HTTP_HOST=0.0.0.0 ADSHUB_EMBEDDED_DB=false
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)" || exit 1
ENTRYPOINT ["adshub"]
CMD ["run"]
