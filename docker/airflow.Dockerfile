# Official Airflow image plus the Kafka provider and the kafka_workflows core the DAGs import.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root requirements.txt pyproject.toml README.md /opt/kafka-workflows/
COPY --chown=airflow:root include /opt/kafka-workflows/include
COPY --chown=airflow:root plugins /opt/kafka-workflows/plugins
RUN pip install --no-cache-dir "apache-airflow==3.3.2" \
      "apache-airflow-providers-apache-kafka==2.1.0" "apache-airflow-providers-postgres" \
      "psycopg[binary]>=3.2,<4" "confluent-kafka[avro,protobuf,json]" \
    && pip install --no-cache-dir --no-deps /opt/kafka-workflows
