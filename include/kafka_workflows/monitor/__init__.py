"""Read models for operating kafka-workflows (what the Airflow UI and its API show).

Each topic the pages need is followed by ONE background thread per process (`follower.py`) that
keeps a bounded in-memory index, so a request is answered from memory and never scans a topic:
the status topic (`status.py`), the control topic as an audit log (`audit.py`), every dead-letter
topic (`deadletters.py`) and the store topics (`requests.py`). Lag comes from the admin client
(`lag.py`), refreshed in the background. `service.py` joins them with the workflow specs.
Nothing here imports Airflow.
"""
