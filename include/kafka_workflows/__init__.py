"""kafka-workflows core: the Kafka side of the workflows, with no Airflow import.

This package is all the companion worker image contains. The Airflow side lives in
`plugins/kafka_workflows_airflow` and imports from here, never the other way round.
"""

__version__ = "0.1.0"
