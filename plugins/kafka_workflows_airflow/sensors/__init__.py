from kafka_workflows_airflow.sensors.completion import AwaitCompletionSensor

__all__ = ["AwaitCompletionSensor"]
