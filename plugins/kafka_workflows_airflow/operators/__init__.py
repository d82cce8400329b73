from kafka_workflows_airflow.operators.notify import NotifyOperator
from kafka_workflows_airflow.operators.produce import ProduceRequestsOperator
from kafka_workflows_airflow.operators.split import SplitToJobsOperator

__all__ = ["NotifyOperator", "ProduceRequestsOperator", "SplitToJobsOperator"]
