# The companion worker image: the Kafka side only (include/ and its dependencies), no Airflow.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY include ./include
# plugins/ is listed by pyproject's package finder; the worker image ships an empty one.
# [examples]: the example handlers' database (SQLAlchemy, psycopg for the shared Postgres);
# [schemas]: the schema registry client and its Avro, Protobuf and JSON Schema serializers;
# [tracing]: the OpenTelemetry SDK and OTLP exporter, used when the OTEL_* variables are set.
RUN mkdir -p plugins && pip install --no-cache-dir ".[examples,schemas,tracing]" && useradd --uid 50000 worker
USER worker
ENTRYPOINT ["kafka-workflows"]
CMD ["--help"]
