from kafka_workflows_airflow.triggers.completion import StoreCompletionTrigger

__all__ = ["StoreCompletionTrigger"]
