"""The ``flowkit`` command: thin click wrappers over the modules below. The only module
that prints, exits or installs log handlers."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click

from . import cli_map, jsonsafe
from .config import Settings, redact
from .connectivity import broker_error, database_error, probe_broker, service_error, wait_for_services
from .errors import FlowkitError, StoreUnavailable

log = logging.getLogger("flowkit.cli")


class CliError(click.ClickException):
    """A FlowkitError shown as one line, exit code 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """FlowkitErrors, and failures to reach the database or broker, as one ``error:`` line."""
    try:
        yield
    except FlowkitError as exc:
        settings = _current_settings()
        if isinstance(exc, StoreUnavailable) and exc.__cause__ is not None and settings:
            # one wording for every command, with the URL as the user wrote it
            raise CliError(str(database_error(exc.__cause__, settings.database_url))) from exc
        raise CliError(str(exc)) from exc
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise  # already one line (or a normal exit)
    except Exception as exc:
        settings = _current_settings()
        err = service_error(exc, database_url=settings.database_url,
                            broker_url=settings.broker_url) if settings else None
        if err is None:
            raise  # a bug: keep its traceback
        raise CliError(str(err)) from exc


def _current_settings() -> Settings | None:
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return obj.get("settings") if isinstance(obj, dict) else None


class _Main(click.Group):
    """The root command: whatever a subcommand raises goes through friendly_errors."""

    def invoke(self, ctx: click.Context) -> Any:
        with friendly_errors():
            return super().invoke(ctx)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]  # type: ignore[no-any-return]


def _store(settings: Settings, *, auto_upgrade: bool | None = None) -> Any:
    from .store.sql import SqlStore

    store = SqlStore(settings.database_url)
    # SQLite is a single-user dev store: migrate it for the user. A shared PostgreSQL
    # database is migrated deliberately, with `flowkit db upgrade`.
    store.ensure_schema(auto_upgrade=store.is_sqlite if auto_upgrade is None else auto_upgrade)
    return store


def _parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value (e.g. -p customer=42)",
                                     param_hint="-p/--param")
        out[key.strip()] = value
    return out


def _fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _duration(start: datetime | None, end: datetime | None) -> str:
    if not start or not end:
        return "-"
    seconds = (end - start).total_seconds()
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _echo_json(data: Any) -> None:
    """Valid JSON, always: NaN or Infinity stored before flowkit refused them print as null."""
    click.echo(jsonsafe.dumps(jsonsafe.sanitize(data), indent=2, default=_json_default, sort_keys=True))


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--database-url", envvar="FLOWKIT_DATABASE_URL", help="SQLAlchemy URL of the store.")
@click.option("--broker-url", envvar="FLOWKIT_BROKER_URL", help="Celery broker URL.")
@click.option("--dags-folder", envvar="FLOWKIT_DAGS_FOLDER", help="Folder of flow modules.")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.version_option(package_name="flowkit")
@click.pass_context
def main(ctx: click.Context, database_url: str | None, broker_url: str | None,
         dags_folder: str | None, log_level: str) -> None:
    """flowkit: Python DAGs on Celery, with their history in SQL."""
    _setup_logging(log_level)
    with friendly_errors():
        settings = Settings.from_env(database_url=database_url, broker_url=broker_url,
                                     dags_folder=dags_folder)
    ctx.obj = {"settings": settings, "broker_given": bool(broker_url)}


# -- dags -------------------------------------------------------------------------------
@main.group()
def dags() -> None:
    """Inspect the flows in the dags folder."""


def _report_errors(report: Any) -> None:
    for err in report.errors:
        click.echo(f"error: {err}", err=True)


@dags.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def dags_list(ctx: click.Context, as_json: bool) -> None:
    """List the flows; modules that fail to import are named with file and line."""
    from .sync import pool_problems, sync_dags

    settings = _settings(ctx)
    with friendly_errors():
        store = _store(settings)
        # printed below, once each (not also logged)
        report = sync_dags(store, settings.dags_folder, timeout=settings.dag_import_timeout_seconds,
                           log_problems=False)
        problems = pool_problems(report.flows.values(), store.pool_sizes())
    flows = sorted(report.flows.values(), key=lambda f: f.name)
    paused = {row["name"] for row in store.list_flows() if row["paused"]}
    if as_json:
        _echo_json({
            "flows": [{"name": f.name, "version": f.version, "steps": len(f.steps),
                       "schedule": f.schedule, "owner": f.owner, "tags": list(f.tags),
                       "path": f.path, "paused": f.name in paused} for f in flows],
            "errors": [{"path": e.path, "lineno": e.lineno, "message": e.message}
                       for e in report.errors],
        })
        for problem in problems:  # stderr, as before: the JSON lists load errors only
            click.echo(f"error: {problem}", err=True)
        return
    rows = [[f.name, str(len(f.steps)), f.schedule or "-", f.owner or "-", f.version or "-",
             "paused" if f.name in paused else "-", str(f.path)] for f in flows]
    click.echo(_table(["flow", "steps", "schedule", "owner", "version", "paused", "file"], rows))
    _report_errors(report)
    for problem in problems:
        click.echo(f"error: {problem}", err=True)


@dags.command("check")
@click.pass_context
def dags_check(ctx: click.Context) -> None:
    """Import every module afresh and list every problem (exit 1 if there is one)."""
    from .loader import load_folder

    settings = _settings(ctx)
    report = load_folder(settings.dags_folder, timeout=settings.dag_import_timeout_seconds)
    if not report.files:
        raise CliError(f"no flow modules found in {settings.dags_folder!r}; set "
                       "FLOWKIT_DAGS_FOLDER or --dags-folder")
    for r in report.files:
        status = "error" if r.error else "ok"
        names = ", ".join(f.name for f in r.flows) or "-"
        click.echo(f"{status:5}  {r.import_ms:7.0f} ms  {r.path}  {names}")
        if not r.error and r.import_ms > 2000:
            click.echo(f"warning: {r.path} takes {r.import_ms:.0f} ms to import; keep I/O and "
                       "heavy imports out of module level", err=True)
    _report_errors(report)
    from .sync import settings_problems

    problems = settings_problems(report.flows.values(), settings)
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if report.errors or problems:
        ctx.exit(1)


# -- runs -------------------------------------------------------------------------------
@main.command()
@click.argument("flow")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A run parameter; repeat for more.")
@click.option("--reason", default="", help="Why you triggered it (kept in the audit trail).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def trigger(ctx: click.Context, flow: str, params: tuple[str, ...], reason: str,
            as_json: bool) -> None:
    """Start a run of FLOW and print its id.

    The run is queued in the database, then the scheduler is woken through the broker. If
    the broker cannot be reached, flowkit prints one warning line and still exits 0: the run
    exists, and a scheduler that can reach the broker starts it at its next sweep
    (FLOWKIT_SWEEP_SECONDS). Exiting 1 would invite a retry that queues the run twice. A
    malformed FLOWKIT_BROKER_URL fails before any run is created.
    """
    settings = _settings(ctx)
    raw = _parse_params(params)
    with friendly_errors():
        store = _store(settings)
        run_id = _trigger(settings, store, flow, raw, reason=reason)
    if as_json:
        _echo_json({"run_id": run_id, "flow": flow})
    else:
        click.echo(run_id)


def _trigger(settings: Settings, store: Any, flow: str, raw: dict[str, Any], *, reason: str = "",
             notify: bool = True, trigger: str = "manual") -> str:
    from .spec import resolve_params
    from .sync import spec_for_trigger

    # Imports only this flow's file, and only if it changed: never waits on other modules.
    spec = spec_for_trigger(store, settings.dags_folder, flow, timeout=settings.dag_import_timeout_seconds)
    resolved = resolve_params(spec, raw, max_depth=settings.max_json_depth,
                              max_bytes=settings.max_params_bytes)
    run_id: str = store.create_run(spec, resolved, actor=f"cli:{_user()}",
                                   trigger=trigger, reason=reason)
    if store.is_paused(flow):
        click.echo(f'warning: flow "{flow}" is paused: run {run_id} stays queued until '
                   f"`flowkit flows unpause {flow}`", err=True)
    if notify:
        warning = _notify_scheduler(settings, run_id)
        if warning:
            click.echo(f"warning: {warning}", err=True)
    return run_id


def _user() -> str:
    import getpass
    import os

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container uid with no passwd entry
        return f"uid{os.getuid()}"


#: How long `flowkit trigger` waits for the broker (each connect, TLS handshake and read).
NOTIFY_TIMEOUT_SECONDS = 2.0


def _notify_scheduler(settings: Settings, run_id: str) -> str | None:
    """Wake the scheduler now; if the broker is away its sweep finds the run anyway.

    Returns a one-line warning when the wake-up could not be published.
    """
    if settings.broker_url.startswith("memory"):
        return None  # an in-process broker: no scheduler elsewhere to wake
    try:
        from .celery_app import make_app
        from .connectivity import bounded_transport_options
        from .dispatch.events import BrokerEvents

        # One bounded try first: the publish below retries, and a broker that can never
        # answer (TLS to a plain server, a bad database index) should cost seconds, not minutes.
        probe_broker(settings.broker_url, timeout_seconds=NOTIFY_TIMEOUT_SECONDS)
        app = make_app(settings)
        app.conf.broker_connection_timeout = NOTIFY_TIMEOUT_SECONDS
        app.conf.broker_transport_options = {
            **app.conf.broker_transport_options,
            **bounded_transport_options(settings.broker_url, NOTIFY_TIMEOUT_SECONDS)}
        BrokerEvents(app, settings.events_queue).publish({"type": "run_created", "run_id": run_id})
    except Exception as exc:  # the run is safe in SQL
        err = exc if isinstance(exc, FlowkitError) else broker_error(exc, settings.broker_url)
        return (f"run {run_id} is queued, but the scheduler was not woken: "
                f"{err} (a scheduler that reaches the broker starts the run at its next sweep)")
    return None


@main.group()
def runs() -> None:
    """Inspect runs."""


@runs.command("list")
@click.option("--flow", help="Only runs of this flow.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def runs_list(ctx: click.Context, flow: str | None, limit: int, as_json: bool) -> None:
    """The newest runs."""
    with friendly_errors():
        store = _store(_settings(ctx))
        rows = store.list_runs(flow, limit=limit)
        specs: dict[tuple[str, str], Any] = {}
        rows = [{**r, "params": _masked_params(store, r, specs)} for r in rows]
    if as_json:
        _echo_json(rows)
        return
    click.echo(_table(
        ["run", "flow", "state", "trigger", "version", "created", "duration"],
        [[r["id"], r["flow_name"], _state_label(r), r["trigger"], r["version"][:12],
          _fmt_time(r["created_at"]), _duration(r["started_at"], r["ended_at"])] for r in rows]))


def _state_label(run: dict[str, Any]) -> str:
    """A run's state, with how its compensation ended ("failed (compensated)")."""
    outcome = run.get("outcome")
    return f"{run['state']} ({outcome})" if outcome else str(run["state"])


def _masked_params(store: Any, run: dict[str, Any], specs: dict[tuple[str, str], Any]) -> dict[str, Any]:
    """A run's params with secret ones as ***; all of them if the flow version is unknown."""
    from .errors import NotFoundError
    from .secrets import MASK, mask_params

    key = (run["flow_name"], run["version"])
    if key not in specs:
        try:
            specs[key] = store.flow_spec(*key)
        except NotFoundError:
            specs[key] = None
    if specs[key] is None:
        return {k: MASK for k in run["params"] or {}}
    return mask_params(specs[key], run["params"])


def run_details(store: Any, run_id: str, *, with_events: bool = False) -> dict[str, Any]:
    """A run, its steps and (optionally) its audit trail, with secret param values as ***."""
    from .secrets import mask_data, mask_params, mask_text, secret_values

    run = store.get_run(run_id)
    steps = {s["step"]: s for s in store.step_runs(run_id)}
    attempts = store.attempts(run_id)
    spec = store.flow_spec(run["flow_name"], run["version"])
    results = store.results(run_id)
    hidden = secret_values(spec, run["params"])
    out_steps = []
    # then the compensation steps the run got when it failed (store/saga.py)
    for name in spec.step_names + [c.name for c in spec.compensations if c.name in steps]:
        s = steps[name]
        atts = [a for a in attempts if a["step"] == name]
        last = atts[-1] if atts else {}
        out_steps.append({
            "step": name, "state": s["state"], "attempts": len(atts),
            "started_at": s["started_at"], "ended_at": s["ended_at"],
            "worker": last.get("worker"),
            "error": mask_text(last.get("error"), hidden) if s["state"] != "success" else None,
            "result": mask_data(results.get(name), hidden),
            "attempt_history": [{**{k: a[k] for k in ("number", "state", "worker", "started_at",
                                                      "ended_at", "deliveries", "task_id")},
                                 "error": mask_text(a["error"], hidden)}
                                for a in atts],
        })
    cli_map.add_instances(store, run_id, out_steps, lambda text: mask_text(text, hidden))
    details = {**run, "params": mask_params(spec, run["params"]), "steps": out_steps}
    if with_events:
        # the flow's own events (an operator paused or unpaused it) while the run existed,
        # and the pause it was created under, if any
        flow_events = store.flow_events(run["flow_name"], until=run["ended_at"])
        before = [e for e in flow_events if e["at"] < run["created_at"]][-1:]
        flow_events = [e for e in before if e["action"] == "operator_pause"] + [
            e for e in flow_events if e["at"] >= run["created_at"]]
        events = sorted(store.events(run_id) + flow_events, key=lambda e: (e["at"], e["id"]))
        details["events"] = [{**e, "reason": mask_text(e["reason"], hidden)} for e in events]
    return details


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--events", "with_events", is_flag=True, help="Also print the audit trail.")
@click.option("--step", "step_name", metavar="NAME",
              help="One step in full (a map step's instance: name[i]): every attempt with its "
                   "error, full traceback and a shell step's output.")
@click.pass_context
def runs_show(ctx: click.Context, run_id: str, as_json: bool, with_events: bool,
              step_name: str | None) -> None:
    """A run's steps: state, attempts, duration, worker, error."""
    with friendly_errors():
        store = _store(_settings(ctx))
        run_id = store.resolve_run_id(run_id)
        if step_name is not None:
            one = _one_step(store, run_id, step_name)
            _echo_json(one) if as_json else click.echo(
                cli_map.format_step(one, _duration, _fmt_time))
            return
        details = run_details(store, run_id, with_events=with_events or as_json)
    if as_json:
        _echo_json(details)
        return
    events = details.pop("events", [])
    click.echo(_format_run(details))
    if with_events:
        click.echo("\nAUDIT TRAIL")
        for e in events:
            where = f"{e['step']}#{e['attempt']}" if e["attempt"] else (
                e["step"] or ("flow" if e.get("flow_name") and not e["run_id"] else "run"))
            click.echo(f"{_fmt_time(e['at'])}  {e['actor']:<28} {e['action']:<20} {where:<22} "
                       f"{e['old_state'] or ''}->{e['new_state'] or ''}  {e['reason']}")


def _one_step(store: Any, run_id: str, name: str) -> dict[str, Any]:
    from .secrets import mask_data, mask_text, secret_values

    run = store.get_run(run_id)
    spec = store.flow_spec(run["flow_name"], run["version"])
    hidden = secret_values(spec, run["params"])
    return cli_map.step_details(store, run_id, spec, name, lambda text: mask_text(text, hidden),
                                lambda data: mask_data(data, hidden))


def _format_run(d: dict[str, Any]) -> str:
    head = (f"run {d['id']}  flow {d['flow_name']}  version {d['version']}  state {_state_label(d)}  "
            f"duration {_duration(d['started_at'], d['ended_at'])}")
    params = f"params {jsonsafe.dumps(jsonsafe.sanitize(d['params']), sort_keys=True, default=str)}"
    rows = []
    for s in d["steps"]:
        rows.append([s["step"], s["state"], str(s["attempts"]), _duration(s["started_at"], s["ended_at"]),
                     s["worker"] or "-", (s["error"] or "")[:80]])
        rows += cli_map.table_rows(s, _duration)  # a map step's instances
    lines = [head, params, "", _table(["step", "state", "attempts", "duration", "worker", "error"], rows)]
    failed = [s for s in d["steps"] if s["state"] == "failed" and s["error"]]
    if failed:
        lines += ["", "ERRORS"] + [f"{s['step']}: {s['error']}" for s in failed]
        lines += [line for s in failed for line in cli_map.error_lines(s)]
    return "\n".join(lines)


# -- daemons ----------------------------------------------------------------------------
def _make_scheduler(settings: Settings, store: Any, app: Any, lease: Any = None) -> Any:
    from .dispatch.base import Backpressure
    from .dispatch.celery import CeleryDispatcher
    from .dispatch.events import BrokerEvents
    from .scheduler.loop import Scheduler

    dispatcher = CeleryDispatcher(app, settings)
    backpressure = Backpressure(dispatcher.queue_depth, high=settings.queue_high_watermark,
                                low=settings.queue_low_watermark)
    return Scheduler(
        store, dispatcher, BrokerEvents(app, settings.events_queue), lease=lease,
        sweep_seconds=settings.sweep_seconds, queued_lease_seconds=settings.queued_lease_seconds,
        lost_after_seconds=settings.lost_after_seconds, global_cap=settings.max_in_flight or None,
        backpressure=backpressure,
    )


def _refresh_dags_in_background(settings: Settings, store: Any, stop: threading.Event) -> threading.Thread:
    """Re-read the dags folder in a thread of its own: a slow or hanging module import never
    holds up the scheduler's loop (imports run in subprocesses with a timeout anyway)."""
    from .sync import sync_dags

    def loop() -> None:
        while True:
            try:
                sync_dags(store, settings.dags_folder, timeout=settings.dag_import_timeout_seconds)
                store.sync_flow_caps(f for f in _active_specs(store))
            except Exception as exc:  # the next refresh tries again
                log.warning("dags: refresh failed: %s", exc)
            if stop.wait(settings.dag_refresh_seconds):
                return

    thread = threading.Thread(target=loop, name="flowkit-dags-refresh", daemon=True)
    thread.start()
    return thread


def _active_specs(store: Any) -> list[Any]:
    return [store.flow_spec(f["name"], f["version"]) for f in store.list_flows()]


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


_WAIT_OPTION = click.option(
    "--wait-for-services", "wait_seconds", type=click.FloatRange(0), default=None, metavar="SECONDS",
    help="At startup, retry an unreachable database or broker for this long (default: until it "
         "answers). A malformed URL, unknown host or refused password fails at once.")


def _wait_for_services(settings: Settings, what: str, *, database: bool = True, broker: bool = True,
                       stop: threading.Event | None = None, wait_seconds: float | None = None) -> None:
    """Block until the services answer (one log line per retry); exit 1 on what cannot work."""
    with friendly_errors():
        wait_for_services(settings, what=what, database=database, broker=broker, stop=stop,
                          give_up_after_seconds=wait_seconds, logger=log)


@main.command()
@_WAIT_OPTION
@click.pass_context
def scheduler(ctx: click.Context, wait_seconds: float | None) -> None:
    """Run the scheduler daemon (on PostgreSQL several: one active, the others stand by;
    SQLite runs exactly one)."""
    from .celery_app import make_app

    settings = _settings(ctx)
    if logging.getLogger().level > logging.INFO:
        logging.getLogger("flowkit").setLevel(logging.INFO)
    stop = threading.Event()
    _stop_on_signals(stop)
    _wait_for_services(settings, "scheduler", stop=stop, wait_seconds=wait_seconds)
    with friendly_errors():
        store = _store(settings)
        app = make_app(settings)
        from .scheduler.lease import lease_for

        sched = _make_scheduler(settings, store, app)
        # The lease fences every write of this store from now on (PostgreSQL).
        sched.lease = lease_for(store, sched.actor, duration_seconds=settings.scheduler_lease_seconds,
                                renew_seconds=settings.scheduler_lease_renew_seconds)
        if store.is_sqlite:
            sched.lease.acquire()  # refuses, in one line, a second scheduler on the same SQLite file
    log.info("scheduler: store %s, broker %s, dags %s", redact(settings.database_url),
             redact(settings.broker_url), settings.dags_folder)
    _refresh_dags_in_background(settings, store, stop)
    sched.run_forever(stop)
    log.info("scheduler: stopped")


@main.command()
@click.option("-Q", "--queues", default=None, help="Comma-separated queues (default: flowkit).")
@click.option("-c", "--concurrency", type=click.IntRange(1, 512), default=None,
              help="Processes (default FLOWKIT_WORKER_CONCURRENCY).")
@click.option("--pool", type=click.Choice(["prefork", "solo", "threads"]), default="prefork",
              show_default=True)
@click.option("-n", "--hostname", default=None, help="Worker name (Celery -n).")
@_WAIT_OPTION
@click.pass_context
def worker(ctx: click.Context, queues: str | None, concurrency: int | None, pool: str,
           hostname: str | None, wait_seconds: float | None) -> None:
    """Run a worker daemon that executes step attempts."""
    from .celery_app import make_app

    settings = _settings(ctx)
    _wait_for_services(settings, "worker", wait_seconds=wait_seconds)
    with friendly_errors():
        _store(settings)  # fail now, with a clear message, if the store is not ready
    app = make_app(settings)
    app.flowkit_settings = settings
    argv = ["worker", f"--pool={pool}", f"--concurrency={concurrency or settings.worker_concurrency}",
            f"--queues={queues or settings.default_queue}", "--loglevel=INFO", "-E",
            "--without-gossip", "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv)


@main.command()
@click.option("--port", default=5555, show_default=True, type=click.IntRange(1, 65535))
@_WAIT_OPTION
@click.pass_context
def flower(ctx: click.Context, port: int, wait_seconds: float | None) -> None:
    """Run Flower on the broker: live task activity, named <flow>.<step>."""
    from .celery_app import make_app

    settings = _settings(ctx)
    _wait_for_services(settings, "flower", database=False, wait_seconds=wait_seconds)
    app = make_app(settings)
    app.start(argv=["flower", f"--port={port}"])


@main.group()
def db() -> None:
    """Manage the store's schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply Alembic migrations up to the newest schema."""
    from .store.sql import SqlStore

    settings = _settings(ctx)
    with friendly_errors():
        revision = SqlStore(settings.database_url).upgrade()
    click.echo(f"database {redact(settings.database_url)} at schema {revision}")


# -- dev --------------------------------------------------------------------------------
#: Exit codes of a `flowkit dev` stopped by a signal, as a shell reports them (128 + signum).
_SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


@main.command()
@click.argument("flow")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE")
@click.option("--timeout", default=300.0, show_default=True, type=click.FloatRange(1),
              help="Give up after this many seconds.")
@click.option("--approve", "approve_steps", multiple=True, metavar="STEP",
              help="Approve this approval step when it waits (repeatable; 'all' for every one).")
@click.option("--reject", "reject_steps", multiple=True, metavar="STEP",
              help="Reject this approval step when it waits (repeatable; 'all' for every one).")
@click.pass_context
def dev(ctx: click.Context, flow: str, params: tuple[str, ...], timeout: float,
        approve_steps: tuple[str, ...], reject_steps: tuple[str, ...]) -> None:
    """Run FLOW once with no servers: scheduler and worker in this process, SQLite store,
    Celery's in-memory transport. Exit 0 if the run succeeds, 1 if not; 130 on Ctrl-C and
    143 on SIGTERM, within a second, with the run cancelled and its shell commands killed.

    An approval step that waits is decided by --approve/--reject; otherwise flowkit prints
    the `flowkit approve/reject` command to run from another terminal, and keeps waiting."""
    from .devrun import DevSession

    signalled = _catch_stop_signals()
    settings, store, app, sched = _dev_setup(ctx)
    if signalled.is_set():  # before the run exists: nothing to stop
        _hard_exit(_SIGNAL_EXIT[signalled.signum])
    with friendly_errors():
        if approve_steps or reject_steps:  # check the step names before creating the run
            from .sync import sync_dags

            sync_dags(store, settings.dags_folder, timeout=settings.dag_import_timeout_seconds)
            cli_approvals.check_dev_decisions(store.flow_spec(flow), approve_steps, reject_steps)
        run_id = _trigger(settings, store, flow, _parse_params(params), reason="flowkit dev",
                          notify=False, trigger="dev")
        spec = store.flow_spec(flow)
        on_change = cli_approvals.DevApprovals(
            store, settings, run_id, approve=approve_steps, reject=reject_steps, user=_user(),
            wake=lambda: sched.events.publish({"type": "approval_decided", "run_id": run_id}))
        store.sync_flow_caps(_active_specs(store))
    # The embedded worker serves every queue this flow's steps name, not just the default.
    queues = sorted({settings.default_queue} | {s.queue for s in spec.steps if s.queue})
    click.echo(f"run {run_id} of {flow}: started (store {redact(settings.database_url)}, "
               f"broker {redact(settings.broker_url)})")
    session = DevSession(app, sched, store, run_id, queues)
    session.start()
    final = _follow(store, run_id, timeout, click.echo, on_change, stop=signalled)
    if final == "interrupted":
        _dev_interrupted(session, run_id, signalled.signum)
    from .callbacks import wait_for_callbacks

    if final != "timeout" and wait_for_callbacks(store, run_id, timeout=10.0):
        click.echo(f"run {run_id}: callbacks still pending after 10 s; not waiting longer")
    click.echo("")
    click.echo(_format_run(run_details(store, run_id)))
    _dev_exit(ctx, 0 if final == "success" else 1, clean=session.close())


class _StopSignal(threading.Event):
    """Set by SIGINT or SIGTERM; ``signum`` says which came first."""

    signum = signal.SIGINT


def _catch_stop_signals() -> _StopSignal:
    """SIGINT and SIGTERM only set an event: the dev loop stops on it, and a second Ctrl-C
    while it stops is absorbed rather than raised in whatever thread code runs."""
    got = _StopSignal()

    def handler(signum: int, _frame: Any) -> None:
        if not got.is_set():
            got.signum = signal.Signals(signum)
            got.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return got


def _dev_setup(ctx: click.Context) -> tuple[Settings, Any, Any, Any]:
    """Settings (memory broker unless one was given), the SQLite store with this process
    holding its scheduler lease, runs an earlier killed dev left closed, the app and scheduler."""
    from dataclasses import replace

    from .celery_app import make_app
    from .devrun import close_leftover_runs, hold_lease
    from .worker import set_runtime

    settings = _settings(ctx)
    if not ctx.obj["broker_given"]:
        settings = replace(settings, broker_url="memory://localhost/")
    with friendly_errors():
        probe_broker(settings.broker_url)  # interactive: say at once that it is down
        store = _store(settings, auto_upgrade=True)
        lease = hold_lease(store)
        if lease is not None:
            ctx.call_on_close(lease.release)  # the process exits then; a test's may not
            closed = close_leftover_runs(store)
            if closed:
                click.echo(f"closed {len(closed)} run(s) a killed flowkit dev left running, not "
                           f"resumed: {', '.join(r['id'] + ' (' + r['flow_name'] + ')' for r in closed)}")
        app = make_app(settings)
        if settings.broker_url.startswith("memory"):
            app.conf.broker_transport_options = {**app.conf.broker_transport_options,
                                                 "polling_interval": 0.01}
        app.flowkit_settings = settings
        set_runtime(None)
        sched = _make_scheduler(settings, store, app)
    return settings, store, app, sched


def _dev_interrupted(session: Any, run_id: str, signum: int) -> None:
    """Ctrl-C or SIGTERM: stop everything, say so in one line, exit at once."""
    name = signal.Signals(signum).name
    # The worker's "outcome discarded" lines are what an interrupt means: the line below says it.
    logging.getLogger("flowkit.worker").setLevel(logging.ERROR)
    stopped = session.interrupt(name)
    done = stopped.run.removeprefix(f"run {run_id}: ")
    killed = f"; {stopped.shells} shell command process group(s) killed" if stopped.shells else ""
    click.echo(f"run {run_id}: flowkit dev interrupted ({name}): {done}{killed}")
    _hard_exit(_SIGNAL_EXIT.get(signal.Signals(signum), 1))


def _dev_exit(ctx: click.Context, code: int, *, clean: bool) -> None:
    """Exit with the run's outcome. A step body that ignored its timeout may still run in a
    worker thread (its attempt is recorded): then exit without waiting for it."""
    if not clean:
        _hard_exit(code)
    ctx.exit(code)


def _hard_exit(code: int) -> None:
    """Exit now, without joining the threads that still run step bodies."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _step_order(order: dict[str, int], name: str) -> tuple[int, int]:
    """Where step ``name`` is printed: in flow order, a map step's instances right under it."""
    from .spec import split_instance

    base, index = split_instance(name)
    return order.get(base, len(order)), -1 if index is None else index


def _follow(store: Any, run_id: str, timeout: float, echo: Callable[[str], None],
            on_change: Callable[[str, str, Callable[[str], None]], None] | None = None,
            stop: threading.Event | None = None) -> str:
    """Print each step's state changes until the run ends; returns its final state,
    "timeout", or "interrupted" once ``stop`` is set."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    run = store.get_run(run_id)
    order = store.flow_spec(run["flow_name"], run["version"]).position
    while time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            return "interrupted"
        for s in sorted(store.step_runs(run_id), key=lambda r: _step_order(order, r["step"])):
            if seen.get(s["step"]) != s["state"]:
                seen[s["step"]] = s["state"]
                echo(f"  {s['step']:<24} {s['state']}")
                if on_change is not None:
                    with friendly_errors():
                        on_change(s["step"], s["state"], echo)
        state: str = store.get_run(run_id)["state"]
        if state in ("success", "failed", "cancelled"):
            echo(f"run {run_id}: {state}")
            return state
        if stop is not None:
            stop.wait(0.1)
        else:
            time.sleep(0.1)
    echo(f"run {run_id}: still running after {timeout:g} s; gave up waiting")
    return "timeout"


# Rendering commands (render, lineage, report), pools and status, and operators' actions
# (flows pause/unpause, runs cancel/retry/mark, approve/reject) live beside this module.
from . import cli_actions, cli_approvals, cli_ops, cli_render  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    # Under `python -m flowkit.cli` this file runs as __main__, a second copy of the module:
    # the commands registered by cli_ops and cli_render live on flowkit.cli's group.
    from flowkit.cli import main as _registered_main

    sys.exit(_registered_main())
