"""The local stack: a real Kafka broker, airflow standalone and the companion worker as processes."""
