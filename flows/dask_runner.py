"""A Dask task runner whose workers report to the flow's Prefect API, ephemeral mode included.

Prefect serialises its settings with every task it sends to a Dask worker, so workers use the
flow's `PREFECT_API_URL`. With none set (ephemeral mode: the demo, a plain `inversa run`), each
worker process would start a temporary Prefect server of its own: seconds per worker, and
task runs, logs and artifacts written through several servers at once. Starting the flow
process's temporary server before any task is submitted, and setting its address, gives every
worker the one API. Workers on other machines cannot reach a server bound to 127.0.0.1: with
`--dask-address` to a remote cluster, run `inversa server` (or any Prefect server) and set
`PREFECT_API_URL` to an address the workers can reach.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_dask import DaskTaskRunner


@contextmanager
def worker_api_settings() -> Iterator[None]:
    """Point this process, and the Dask workers it feeds, at one Prefect API."""
    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the process-wide instance get_client() uses in ephemeral mode
    server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield


class WorkerApiDaskTaskRunner(DaskTaskRunner):
    """`DaskTaskRunner` that sets up `worker_api_settings` for as long as the flow holds it."""

    def __enter__(self):
        self._api = ExitStack()
        self._api.enter_context(worker_api_settings())
        try:
            return super().__enter__()
        except BaseException:
            self._api.close()
            raise

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._api.__exit__(*exc)
