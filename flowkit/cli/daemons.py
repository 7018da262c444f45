"""The daemons: ``flowkit scheduler``, ``flowkit worker`` and ``flowkit flower``, and the
scheduler as ``flowkit dev`` builds it too."""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

import click

from ..config import Settings, redact
from ..connectivity import wait_for_services
from .common import friendly_errors, open_store, settings_of

if TYPE_CHECKING:
    from ..scheduler.loop import Scheduler
    from ..spec import FlowSpec
    from ..store.sql import SqlStore

log = logging.getLogger(__name__)


def make_scheduler(settings: Settings, store: SqlStore, app: Any, lease: Any = None) -> Scheduler:
    from ..dispatch.base import Backpressure
    from ..dispatch.celery import CeleryDispatcher
    from ..dispatch.events import BrokerEvents
    from ..scheduler.loop import Scheduler

    dispatcher = CeleryDispatcher(app, settings)
    backpressure = Backpressure(
        dispatcher.queue_depth, high=settings.queue_high_watermark, low=settings.queue_low_watermark
    )
    return Scheduler(
        store,
        dispatcher,
        BrokerEvents(app, settings.events_queue),
        lease=lease,
        sweep_seconds=settings.sweep_seconds,
        queued_lease_seconds=settings.queued_lease_seconds,
        lost_after_seconds=settings.lost_after_seconds,
        global_cap=settings.max_in_flight or None,
        backpressure=backpressure,
    )


def refresh_dags_in_background(settings: Settings, store: SqlStore, stop: threading.Event) -> threading.Thread:
    """Re-read the dags folder in a thread of its own: a slow or hanging module import never
    holds up the scheduler's loop (imports run in subprocesses with a timeout anyway)."""
    from ..loading.sync import sync_dags

    def loop() -> None:
        while True:
            try:
                sync_dags(store, settings.dags_folder, timeout=settings.dag_import_timeout_seconds)
                store.sync_flow_caps(f for f in active_specs(store))
            except Exception as exc:  # the next refresh tries again
                log.warning("dags: refresh failed: %s", exc)
            if stop.wait(settings.dag_refresh_seconds):
                return

    thread = threading.Thread(target=loop, name="flowkit-dags-refresh", daemon=True)
    thread.start()
    return thread


def active_specs(store: SqlStore) -> list[FlowSpec]:
    return [store.flow_spec(f["name"], f["version"]) for f in store.list_flows()]


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


LOG_FORMAT_OPTION = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="text (default, FLOWKIT_LOG_FORMAT) or json: one object per line with flow, run_id, step, attempt.",
)


def _with_log_format(settings: Settings, log_format: str | None) -> Settings:
    """The settings with --log-format applied, and the fields filter (and JSON formatter)
    on the handlers logging has now."""
    from dataclasses import replace

    from ..observe import fields

    if log_format is not None:
        settings = replace(settings, log_format=log_format)
    if settings.log_format == "json":
        logging.captureWarnings(True)  # a warning is a log line too, not loose text on stderr
    fields.install(settings.log_format)
    return settings


WAIT_OPTION = click.option(
    "--wait-for-services",
    "wait_seconds",
    type=click.FloatRange(0),
    default=None,
    metavar="SECONDS",
    help="At startup, retry an unreachable database or broker for this long (default: until it "
    "answers). A malformed URL, unknown host or refused password fails at once.",
)


def wait_until_reachable(
    settings: Settings,
    what: str,
    *,
    database: bool = True,
    broker: bool = True,
    stop: threading.Event | None = None,
    wait_seconds: float | None = None,
) -> None:
    """Block until the services answer (one log line per retry); exit 1 on what cannot work."""
    with friendly_errors():
        wait_for_services(
            settings,
            what=what,
            database=database,
            broker=broker,
            stop=stop,
            give_up_after_seconds=wait_seconds,
            logger=log,
        )


@click.command()
@WAIT_OPTION
@LOG_FORMAT_OPTION
@click.pass_context
def scheduler(ctx: click.Context, wait_seconds: float | None, log_format: str | None) -> None:
    """Run the scheduler daemon (on PostgreSQL several: one active, the others stand by;
    SQLite runs exactly one)."""
    from ..execution.celery_app import make_app

    settings = _with_log_format(settings_of(ctx), log_format)
    if logging.getLogger().level > logging.INFO:
        logging.getLogger("flowkit").setLevel(logging.INFO)
    stop = threading.Event()
    _stop_on_signals(stop)
    wait_until_reachable(settings, "scheduler", stop=stop, wait_seconds=wait_seconds)
    with friendly_errors():
        store = open_store(settings)
        app = make_app(settings)
        from ..scheduler.lease import lease_for

        sched = make_scheduler(settings, store, app)
        # The lease fences every write of this store from now on (PostgreSQL).
        sched.lease = lease_for(
            store,
            sched.actor,
            duration_seconds=settings.scheduler_lease_seconds,
            renew_seconds=settings.scheduler_lease_renew_seconds,
        )
        if store.is_sqlite:
            sched.lease.acquire()  # refuses, in one line, a second scheduler on the same SQLite file
    log.info(
        "scheduler: store %s, broker %s, dags %s",
        redact(settings.database_url),
        redact(settings.broker_url),
        settings.dags_folder,
    )
    refresh_dags_in_background(settings, store, stop)
    sender = start_notification_sender(store, sched.actor, sched.dispatcher)
    try:
        sched.run_forever(stop)
    finally:
        sender.stop()
    log.info("scheduler: stopped")


def start_notification_sender(store: SqlStore, holder: str, dispatcher: Any = None) -> Any:
    """Deliver the notification outbox in a thread of its own (a slow webhook never holds up
    the loop); every scheduler runs one, and the outbox's leases keep them from delivering
    a notification twice at once. ``dispatcher`` publishes the tasks that run a flow's
    callable notifiers on workers."""
    from ..notify.sender import NotificationSender, routing_from_specs

    sender = NotificationSender(store, routing_from_specs(store, dispatcher), holder)
    sender.start()
    return sender


@click.command()
@click.option("-Q", "--queues", default=None, help="Comma-separated queues (default: flowkit).")
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, 512),
    default=None,
    help="Processes (default FLOWKIT_WORKER_CONCURRENCY).",
)
@click.option("--pool", type=click.Choice(["prefork", "solo", "threads"]), default="prefork", show_default=True)
@click.option("-n", "--hostname", default=None, help="Worker name (Celery -n).")
@WAIT_OPTION
@LOG_FORMAT_OPTION
@click.pass_context
def worker(
    ctx: click.Context,
    queues: str | None,
    concurrency: int | None,
    pool: str,
    hostname: str | None,
    wait_seconds: float | None,
    log_format: str | None,
) -> None:
    """Run a worker daemon that executes step attempts."""
    from ..execution.celery_app import make_app

    settings = _with_log_format(settings_of(ctx), log_format)
    wait_until_reachable(settings, "worker", wait_seconds=wait_seconds)
    with friendly_errors():
        open_store(settings)  # fail now, with a clear message, if the store is not ready
    app = make_app(settings)
    app.flowkit_settings = settings
    argv = [
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency or settings.worker_concurrency}",
        f"--queues={queues or settings.default_queue}",
        "--loglevel=INFO",
        "-E",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    if settings.log_format == "json":
        argv.insert(0, "--quiet")  # celery's own option: no banner, so every line is one JSON object
    _log_fields_on_celery_handlers(settings.log_format)
    app.worker_main(argv)


def _log_fields_on_celery_handlers(log_format: str) -> None:
    """Celery replaces the root logger's handlers when the worker starts: put the fields
    filter (and JSON formatter) on the ones it installs, for its task logger too."""
    from celery import signals

    from ..observe import fields

    def on_setup(logger: Any = None, **_: Any) -> None:
        fields.install(log_format, logger)

    signals.after_setup_logger.connect(on_setup, weak=False)
    signals.after_setup_task_logger.connect(on_setup, weak=False)


@click.command()
@click.option("--port", default=5555, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on; any but loopback needs FLOWKIT_FLOWER_BASIC_AUTH (or --insecure).",
)
@click.option(
    "--insecure", is_flag=True, help="Allow a non-loopback address without basic auth (a proxy authenticates)."
)
@WAIT_OPTION
@click.pass_context
def flower(ctx: click.Context, port: int, address: str, insecure: bool, wait_seconds: float | None) -> None:
    """Run Flower on the broker: live task activity, named <flow>.<step>."""
    import os

    from ..execution.celery_app import make_app
    from ..observe.flower_auth import AUTH_VARIABLE, basic_auth_users, check_exposure

    settings = settings_of(ctx)
    with friendly_errors():
        users = basic_auth_users(os.environ.get(AUTH_VARIABLE))
        check_exposure(address, users, insecure=insecure)
    wait_until_reachable(settings, "flower", database=False, wait_seconds=wait_seconds)
    if users:  # through the environment Flower reads, not argv (which `ps` shows)
        os.environ["FLOWER_BASIC_AUTH"] = ",".join(users)
    app = make_app(settings)
    app.start(argv=["flower", f"--port={port}", f"--address={address}"])
