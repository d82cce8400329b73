"""The Airflow side of kafka-workflows: hooks, operators, sensors, triggers and the plugin."""
