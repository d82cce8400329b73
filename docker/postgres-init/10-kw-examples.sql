-- The examples' shared database (AIRFLOW_CONN_KW_EXAMPLES_DB): the contacts and subscriptions
-- tables every worker replica and Airflow task write. Run once, when the volume is new.
CREATE DATABASE kw_examples OWNER airflow;
