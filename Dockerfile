# streamdet daemon image: slim, non-root, with a healthcheck on /healthz.
# TensorFlow's build: cpu (the default) or gpu (`docker build --build-arg TENSORFLOW=gpu`,
# CUDA and cuDNN as wheels; run it with the NVIDIA container toolkit and `--gpus 1`).
FROM python:3.11-slim AS build
ARG TENSORFLOW=cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamdet ./streamdet
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[${TENSORFLOW}]"

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 streamdet \
 && mkdir -p /app/models && chown -R streamdet /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY --chown=streamdet config.yaml /app/config.yaml
USER streamdet
# The metrics endpoint listens on localhost only (the HEALTHCHECK below reaches it there).
# To publish it, set STREAMDET_METRICS__HOST=0.0.0.0 together with basic auth and/or TLS
# (metrics.basic_auth_*, metrics.tls_*), as deploy/k8s does.
ENV STREAMDET_MODELS__STORE=/app/models \
    PYTHONUNBUFFERED=1
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=3s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=2)"]
ENTRYPOINT ["streamdet"]
CMD ["run", "--config", "/app/config.yaml"]
