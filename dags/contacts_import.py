"""Events aggregation (pattern 6): import a CSV of contacts as many parallel jobs, then notify once.

Triggered only (from the UI form or the REST API) with a `source` CSV. `split` validates the CSV and
produces one job per `rows_per_job` valid rows plus the store's init(total) in one Kafka
transaction; `await` is deferred (no worker slot, no database polling) until the store says every
job completed or failed; `notify` then posts one signed webhook to `callback_url` and writes the
summary to the log (and emails `notify_email` when set and Airflow's SMTP connection is configured).

The workers and the store processor it relies on:
    kafka-workflows worker --topic contacts-import-jobs --group contacts-importers \
        --handler kw_examples.contacts.import_job --store contacts
    kafka-workflows store-processor --store contacts

The webhook secret is the password of the Airflow connection `kw_webhook`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from kafka_workflows_airflow.notifiers import EmailNotifier, LogNotifier, WebhookNotifier
from kafka_workflows_airflow.operators import NotifyOperator, SplitToJobsOperator
from kafka_workflows_airflow.sensors import AwaitCompletionSensor

JOBS_TOPIC = "contacts-import-jobs"
STORE = "contacts"
WEBHOOK_SECRET_CONN = "kw_webhook"

PARAMS = {
    "source": Param(type="string", minLength=1, title="CSV source",
                    description="The contacts CSV: a path on the Airflow workers, a file:// URL or an http(s):// "
                                "URL. Columns: email (required), first_name (required), last_name, company, "
                                "phone, lead_score, notes."),
    "rows_per_job": Param(500, type="integer", minimum=1, maximum=50_000, title="Rows per job",
                          description="Valid rows per job message; each job is imported by one worker."),
    "on_bad_rows": Param("skip", type="string", enum=["skip", "fail"], title="Bad rows",
                         description="skip: import the valid rows and report the bad ones; "
                                     "fail: import nothing if any row is bad."),
    "callback_url": Param(None, type=["null", "string"], title="Callback URL",
                          description="Receives one POST with the import summary, signed with HMAC-SHA256 "
                                      f"(X-KW-Signature) using the password of connection {WEBHOOK_SECRET_CONN!r}."),
    "notify_email": Param(None, type=["null", "string"], title="Notify email",
                          description="Also email the summary here (needs Airflow's SMTP connection)."),
}


def contacts_import_dag(dag_id: str = "contacts_import", *, jobs_topic: str = JOBS_TOPIC, store: str = STORE,
                        timeout: float = 6 * 3600, end_from_trigger: bool = True) -> DAG:
    """The contacts import DAG; `jobs_topic` and `store` may be templates (tests give each run its own).

    `end_from_trigger` (default): the triggerer finishes `await` itself with the final value as its
    XCom (see AwaitCompletionSensor). One task start less before `notify` (p50 2.0 s instead of
    4.3 s in bench/completion_latency.py), and it avoids an Airflow 3.3 race of the resume path:
    when a trigger fires within seconds of the deferral, the executor's late "success" of the
    deferring attempt finds the resumed attempt QUEUED under the same key and fails it.

    The DAG is not auto-registered: Airflow finds it as a module global (`dag` below), and another
    DAG file may import this factory without registering a second copy of `contacts_import`.
    """
    with DAG(
        dag_id=dag_id,
        description="Events aggregation: split a contacts CSV into jobs, wait for all of them, notify once",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        tags=["kafka-workflows", "events-aggregation"],
        params=PARAMS,
        render_template_as_native_obj=True,  # ints stay ints, an unset param stays None
        auto_register=False,
        doc_md=__doc__,
    ) as dag:
        split = SplitToJobsOperator(
            task_id="split",
            source="{{ params.source }}",
            topic=jobs_topic,
            store=store,
            schema="kw_examples.contacts.SCHEMA",
            rows_per_job="{{ params.rows_per_job }}",
            on_bad_rows="{{ params.on_bad_rows }}",
        )
        wait = AwaitCompletionSensor(
            task_id="await",
            request_id=split.output["request_id"],
            store=split.output["store"],
            timeout=timeout,
            end_from_trigger=end_from_trigger,
        )
        NotifyOperator(
            task_id="notify",
            result=wait.output,
            notifiers=[
                WebhookNotifier(url="{{ params.callback_url }}", secret_conn_id=WEBHOOK_SECRET_CONN),
                LogNotifier(prefix="contacts import"),
                EmailNotifier(to="{{ params.notify_email }}"),
            ],
        )
    return dag


dag = contacts_import_dag()
