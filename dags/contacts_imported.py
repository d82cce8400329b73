"""Assets out, the downstream side: runs whenever a contacts import's request finished.

`contacts_import`'s `await` step declares `outlets: ["kafka-workflows://contacts/imported"]`; the
task `await_assets` that follows it records one event of that asset per finished request, with the
request's summary as the event's extra (request_id, store, status, total, completed, failed). This
DAG is scheduled on the asset: each finished request starts a run (Airflow folds events that arrive
before the run is created into that one run; the task reads every triggering event). Replace
`summarize` with what should follow an import (refresh a report, start the next pipeline).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, task

CONTACTS_IMPORTED = Asset(name="kafka-workflows://contacts/imported", uri="kafka-workflows://contacts/imported")

with DAG(dag_id="contacts_imported", schedule=[CONTACTS_IMPORTED], start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         catchup=False, tags=["kafka-workflows", "assets"],
         doc_md=__doc__):

    @task
    def summarize(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        """The finished requests this run was started for (their events' extras)."""
        finished = [dict(event.extra) for events in (triggering_asset_events or {}).values() for event in events]
        for request in finished:
            print(f"contacts import {request.get('request_id')} {request.get('status')}: "
                  f"{request.get('completed')}/{request.get('total')} jobs, {request.get('failed')} failed")
        return finished

    summarize()
