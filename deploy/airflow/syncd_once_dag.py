"""Airflow DAG `syncd_once`: run `syncd once --source ... --json` on the worker, fail the task
when syncd exits non-zero, and keep its JSON report as the task's XCom.

For platforms that run syncd as a job instead of (or beside) the daemon; the worker needs syncd
installed, its config, and the network paths to the municipal databases and the analytical one.
If the daemon runs too, the two never sync one source at once: the second finds it locked,
reports it `skipped`, and exits 1.

Trigger it with the conf {"source": "<source id>"}; `config` defaults to the daemon's file,
`credentials_dir` to the directory its unit loads the secrets from (/etc/syncd/credentials:
`analytics`, `municipios/<id>`; the worker's user must be able to read it, e.g. in the syncd
group). An empty `credentials_dir` leaves the secrets to the config and PGPASSWORD.
XComs: `return_value` is the report when everything landed; on a failure the report is kept
under the key `report` before the task fails. Exit 1 (something did not land: retryable) fails
the task with retries; exit 2 (the config cannot be used) fails it for good.
The executable is `syncd` on PATH, or the environment variable SYNCD_BIN.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

try:  # Airflow 3
    from airflow.sdk import Param, dag, task
except ImportError:  # Airflow 2.x
    from airflow.decorators import dag, task
    from airflow.models.param import Param

import syncd_airflow


def _exceptions():
    try:
        from airflow.sdk.exceptions import AirflowException, AirflowFailException
    except ImportError:
        from airflow.exceptions import AirflowException, AirflowFailException
    return AirflowException, AirflowFailException


@dag(
    dag_id="syncd_once",
    description="One syncd pass over one municipality, as a task; its JSON report as XCom",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "source": Param("351570", type="string", pattern=r"^[A-Za-z0-9_]{1,32}$"),
        "config": Param("/etc/syncd/syncd.yaml", type="string"),
        "credentials_dir": Param("/etc/syncd/credentials", type="string"),
    },
    tags=["syncd"],
)
def syncd_once():
    @task(
        retries=2,
        retry_delay=timedelta(minutes=5),
        execution_timeout=timedelta(hours=6),
        multiple_outputs=False,  # one XCom, the report; not one per top-level key
    )
    def run_syncd_once(params=None, ti=None) -> dict:
        command = [os.environ.get("SYNCD_BIN", "syncd")]
        code, report = syncd_airflow.run_once(
            command,
            params["config"],
            [params["source"]],
            credentials_dir=params.get("credentials_dir") or None,
        )
        if code == syncd_airflow.EXIT_OK and report is not None:
            return report
        if report is not None:
            ti.xcom_push(key="report", value=report)
        retryable, final = _exceptions()
        error = retryable if code == syncd_airflow.EXIT_FAILED else final
        raise error(syncd_airflow.failure(code, report))

    run_syncd_once()


syncd_once()
