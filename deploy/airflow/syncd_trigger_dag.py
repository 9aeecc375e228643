"""Airflow DAG `syncd_trigger`: ask the running syncd daemon for a fresh municipality, and wait
until its data has landed; downstream tasks then read it.

    request_sync  POST /sources/{source}/sync (bearer token)  -> requested_at
    wait_for_sync GET /status until that source's last_run started at or after requested_at and
                  is over; fails the task if that run failed

The daemon: the Airflow connection `syncd_http` (type http): host and port of `http.listen`
(`schema` http or https), the token of `http.token_file` as its password. For example
    AIRFLOW_CONN_SYNCD_HTTP='{"conn_type": "http", "host": "syncd.internal", "port": 9187,
                              "schema": "http", "password": "<the token>"}'
Trigger it with the conf {"source": "<source id>"}; add your own tasks after `wait_for_sync`,
or let other DAGs wait on it (an Asset, an ExternalTaskSensor).
"""

from __future__ import annotations

from datetime import datetime, timedelta

try:  # Airflow 3
    from airflow.sdk import Param, PokeReturnValue, dag, task
except ImportError:  # Airflow 2.x
    from airflow.decorators import dag, task
    from airflow.models.param import Param
    from airflow.sensors.base import PokeReturnValue

import syncd_airflow

CONNECTION = "syncd_http"


def _endpoint() -> tuple[str, str]:
    """(base URL, token) from the connection; read when a task runs, never at parse time."""
    try:
        from airflow.sdk import BaseHook
    except ImportError:
        from airflow.hooks.base import BaseHook
    conn = BaseHook.get_connection(CONNECTION)
    host = conn.host or "127.0.0.1"
    base = host if "://" in host else f"{conn.schema or 'http'}://{host}:{conn.port or 9187}"
    return base, conn.password


def _fail(message: str) -> Exception:
    """A failure that retrying the sensor cannot mend: the run it watched is over."""
    try:
        from airflow.sdk.exceptions import AirflowFailException
    except ImportError:
        from airflow.exceptions import AirflowFailException
    return AirflowFailException(message)


@dag(
    dag_id="syncd_trigger",
    description="Sync one municipality now through the syncd daemon and wait until it landed",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=8,
    params={"source": Param("351570", type="string", pattern=r"^[A-Za-z0-9_]{1,32}$")},
    tags=["syncd"],
)
def syncd_trigger():
    @task(retries=3, retry_delay=timedelta(seconds=30), multiple_outputs=False)
    def request_sync(params=None) -> dict:
        base, token = _endpoint()
        source = params["source"]
        return {"source": source, "requested_at": syncd_airflow.trigger(base, token, source)}

    @task.sensor(poke_interval=30, timeout=6 * 3600, mode="reschedule")
    def wait_for_sync(request: dict) -> PokeReturnValue:
        base, _ = _endpoint()
        try:
            run = syncd_airflow.finished(base, request["source"], request["requested_at"])
        except syncd_airflow.SyncdFailed as exc:
            raise _fail(str(exc)) from None
        except OSError as exc:  # the daemon restarting, a network blip: look again next poke
            print(f"syncd did not answer: {exc}; looking again at the next poke")
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=run is not None, xcom_value=run)

    wait_for_sync(request_sync())


syncd_trigger()
