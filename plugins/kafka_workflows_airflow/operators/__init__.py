from kafka_workflows_airflow.operators.produce import ProduceRequestsOperator

__all__ = ["ProduceRequestsOperator"]
