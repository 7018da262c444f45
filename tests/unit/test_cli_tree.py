"""Every ``flowkit`` command path with its parameters, pinned: moving the CLI between modules
must leave each command, argument, option and flag as it was. The table was generated from
the tree itself; regenerate it (and say why in the commit) only when a command changes on purpose."""

from __future__ import annotations

from typing import Any

import click

from flowkit.cli import main


def _describe(p: click.Parameter) -> str:
    if isinstance(p, click.Argument):
        return f"{p.name} ARG {p.type!r} nargs={p.nargs} required={p.required}"
    assert isinstance(p, click.Option)
    opts = "/".join(p.opts) + ("|" + "/".join(p.secondary_opts) if p.secondary_opts else "")
    bits = [f"{p.name} {opts} {p.type!r}"]
    if p.is_flag:
        bits.append("flag")
    if p.multiple:
        bits.append("multiple")
    if p.required:
        bits.append("required")
    if p.envvar:
        bits.append(f"env={p.envvar}")
    # click 8.2+ marks "no default" with a sentinel object rather than None
    if p.default is not None and not p.is_flag and not repr(p.default).startswith("Sentinel"):
        bits.append(f"default={p.default!r}")
    return " ".join(bits)


def _walk(cmd: click.Command, path: list[str]) -> dict[str, list[str]]:
    rows = {" ".join(path): [_describe(p) for p in cmd.params]}
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            rows.update(_walk(cmd.commands[name], [*path, name]))
    return rows


def test_every_command_and_flag_is_as_pinned() -> None:
    got = _walk(main, ["flowkit"])
    assert sorted(got) == sorted(EXPECTED), "command paths changed"
    for path, params in EXPECTED.items():
        assert got[path] == params, path


def test_python_m_and_console_script_name_the_same_group() -> None:
    import tomllib
    from importlib import import_module
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    module, _, attr = pyproject["project"]["scripts"]["flowkit"].partition(":")
    entry: Any = getattr(import_module(module), attr)
    assert entry is main


EXPECTED: dict[str, list[str]] = {
    "flowkit": [
        "database_url --database-url STRING env=FLOWKIT_DATABASE_URL",
        "broker_url --broker-url STRING env=FLOWKIT_BROKER_URL",
        "dags_folder --dags-folder STRING env=FLOWKIT_DAGS_FOLDER",
        "log_level --log-level Choice(['DEBUG', 'INFO', 'WARNING', 'ERROR']) default='WARNING'",
        "version --version BOOL flag",
    ],
    "flowkit approve": [
        "run_id ARG STRING nargs=1 required=True",
        "step ARG STRING nargs=1 required=True",
        "by --by STRING required",
        "reason --reason STRING default=''",
    ],
    "flowkit dags": [],
    "flowkit dags check": [],
    "flowkit dags list": [
        "as_json --json BOOL flag",
    ],
    "flowkit db": [],
    "flowkit db upgrade": [],
    "flowkit dev": [
        "flow ARG STRING nargs=1 required=True",
        "params -p/--param STRING multiple",
        "timeout --timeout <FloatRange x>=1> default=300.0",
        "approve_steps --approve STRING multiple",
        "reject_steps --reject STRING multiple",
    ],
    "flowkit flower": [
        "port --port <IntRange 1<=x<=65535> default=5555",
        "address --address STRING default='127.0.0.1'",
        "insecure --insecure BOOL flag",
        "wait_seconds --wait-for-services <FloatRange x>=0>",
    ],
    "flowkit logs": [
        "run_id ARG STRING nargs=1 required=True",
        "step ARG STRING nargs=1 required=True",
        "number --attempt <IntRange x>=1>",
        "follow -f/--follow BOOL flag",
    ],
    "flowkit flows": [],
    "flowkit flows pause": [
        "flow ARG STRING nargs=1 required=True",
        "by --by STRING",
        "reason --reason STRING default=''",
    ],
    "flowkit flows unpause": [
        "flow ARG STRING nargs=1 required=True",
        "by --by STRING",
        "reason --reason STRING default=''",
    ],
    "flowkit lineage": [
        "run_id ARG STRING nargs=1 required=False",
        "uri --dataset STRING",
        "output -o/--output STRING",
        "as_json --json BOOL flag",
    ],
    "flowkit notifications": [],
    "flowkit notifications list": [
        "run_id --run STRING",
        "limit --limit <IntRange x>=1> default=50",
    ],
    "flowkit pools": [],
    "flowkit pools delete": [
        "name ARG STRING nargs=1 required=True",
    ],
    "flowkit pools list": [
        "as_json --json BOOL flag",
    ],
    "flowkit pools set": [
        "name ARG STRING nargs=1 required=True",
        "slots ARG <IntRange 1<=x<=1000000> nargs=1 required=True",
    ],
    "flowkit reject": [
        "run_id ARG STRING nargs=1 required=True",
        "step ARG STRING nargs=1 required=True",
        "by --by STRING required",
        "reason --reason STRING default=''",
    ],
    "flowkit render": [
        "flow ARG STRING nargs=1 required=True",
        "run_id --run STRING",
        "output -o/--output STRING",
        "fmt --format Choice(['svg', 'png', 'dot'])",
        "collapse --collapse BOOL flag",
        "cluster_threshold --cluster-threshold <IntRange x>=1> default=150",
    ],
    "flowkit report": [
        "run_id ARG STRING nargs=1 required=True",
        "output -o/--output STRING required",
    ],
    "flowkit runs": [],
    "flowkit runs cancel": [
        "run_id ARG STRING nargs=1 required=True",
        "by --by STRING",
        "reason --reason STRING default=''",
    ],
    "flowkit runs list": [
        "flow --flow STRING",
        "limit --limit <IntRange 1<=x<=10000> default=20",
        "as_json --json BOOL flag",
    ],
    "flowkit runs mark": [
        "run_id ARG STRING nargs=1 required=True",
        "step ARG STRING nargs=1 required=True",
        "state ARG Choice(['success', 'skipped']) nargs=1 required=True",
        "result --result STRING",
        "by --by STRING",
        "reason --reason STRING default=''",
    ],
    "flowkit runs retry": [
        "run_id ARG STRING nargs=1 required=True",
        "steps --step STRING multiple",
        "downstream --downstream BOOL flag",
        "by --by STRING",
        "reason --reason STRING default=''",
    ],
    "flowkit runs show": [
        "run_id ARG STRING nargs=1 required=True",
        "as_json --json BOOL flag",
        "with_events --events BOOL flag",
        "step_name --step STRING",
    ],
    "flowkit scheduler": [
        "wait_seconds --wait-for-services <FloatRange x>=0>",
        "log_format --log-format Choice(['text', 'json'])",
    ],
    "flowkit status": [
        "as_json --json BOOL flag",
        "no_broker --no-broker BOOL flag",
    ],
    "flowkit timeline": [
        "run_id ARG STRING nargs=1 required=True",
        "output -o/--output STRING",
        "width --width <IntRange 400<=x<=20000> default=1100",
    ],
    "flowkit trigger": [
        "flow ARG STRING nargs=1 required=True",
        "params -p/--param STRING multiple",
        "reason --reason STRING default=''",
        "parent --parent STRING",
        "as_json --json BOOL flag",
    ],
    "flowkit worker": [
        "queues -Q/--queues STRING",
        "concurrency -c/--concurrency <IntRange 1<=x<=512>",
        "pool --pool Choice(['prefork', 'solo', 'threads']) default='prefork'",
        "hostname -n/--hostname STRING",
        "wait_seconds --wait-for-services <FloatRange x>=0>",
        "log_format --log-format Choice(['text', 'json'])",
    ],
    # flowkit backfill (issue 16): added with the command group
    "flowkit backfill": [],
    "flowkit backfill cancel": ["backfill_id ARG STRING nargs=1 required=True", "reason --reason STRING default=''"],
    "flowkit backfill create": [
        "flow ARG STRING nargs=1 required=True",
        "start --start STRING required",
        "end --end STRING required",
        "reprocess --reprocess Choice(['none', 'failed', 'all']) default='none'",
        "max_active_runs --max-active-runs <IntRange x>=1> default=4",
        "backwards --backwards BOOL flag",
        "dry_run --dry-run BOOL flag",
        "params -p/--param STRING multiple",
        "reason --reason STRING default=''",
    ],
    "flowkit backfill list": [
        "flow --flow STRING",
        "limit --limit <IntRange x>=1> default=50",
        "as_json --json BOOL flag",
    ],
    "flowkit backfill pause": ["backfill_id ARG STRING nargs=1 required=True", "reason --reason STRING default=''"],
    "flowkit backfill show": ["backfill_id ARG STRING nargs=1 required=True", "as_json --json BOOL flag"],
    "flowkit backfill unpause": ["backfill_id ARG STRING nargs=1 required=True", "reason --reason STRING default=''"],
}
