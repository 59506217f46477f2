# The sample app (examples/producer_app.py) with the drop-in client: what the e2e tests and
# `make demo` run in their pods. Its UID (10001) differs from the sidecar's (65532), as in a real
# fleet, so the socket must be usable across UIDs.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY client ./client
COPY sidecar ./sidecar
COPY operator ./operator
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="kafka-sidecar-sample-app" \
      org.opencontainers.image.description="Multi-process sample producer for the kafka-sidecar demo" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/kafka_sidecar-*.whl)" && rm -rf /wheels
COPY examples/producer_app.py /app/producer_app.py
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["python", "/app/producer_app.py"]
