"""``flowkit lineage``: where a run came from and what came of it, both ways, with the trigger
events of each link (flowkit/triggers/chain.py); ``--json`` for scripts."""

from __future__ import annotations

import click

from .common import echo_json, friendly_errors, open_store, settings_of
from .render import BadInput, emit, graph_format


@click.command("lineage")
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option("--dataset", "uri", metavar="URI", help="Which step runs wrote and read this dataset.")
@click.option("-o", "--output", metavar="PATH", help="Also draw the lineage graph (.svg, .png or .dot).")
@click.option("--json", "as_json", is_flag=True, help="Print the trigger chain of RUN as JSON.")
@click.pass_context
def lineage_cmd(ctx: click.Context, run_id: str | None, uri: str | None, output: str | None, as_json: bool) -> None:
    """Where RUN came from and what came of it: the runs that triggered it (recursively up)
    and that it triggered (recursively down), each with the flow end or dataset write that
    did it; its steps' results and the datasets they read and wrote (with the other runs
    that touched them). With --dataset URI: every step run that wrote or read URI."""
    from .. import render as rd
    from ..triggers.chain import trigger_chain

    if bool(run_id) == bool(uri):
        raise BadInput("give either a RUN id or --dataset URI")
    if as_json and uri:
        raise BadInput("--json shows a run's trigger chain; give a RUN id, not --dataset")
    fmt = graph_format(output, None) if output else None
    with friendly_errors():
        store = open_store(settings_of(ctx))
        if run_id and as_json:
            echo_json(trigger_chain(store, store.resolve_run_id(run_id)))
            return
        if run_id:
            lin = rd.load_lineage(store, store.resolve_run_id(run_id))
            text, source, what = rd.lineage_text(lin), rd.lineage_dot(lin), f"lineage of run {lin.run['id']}"
        else:
            dlin = rd.load_dataset_lineage(store, str(uri))
            text, source, what = rd.dataset_lineage_text(dlin), rd.dataset_lineage_dot(dlin), f"lineage of {uri}"
        data = rd.dot_to(source, fmt) if fmt else b""
    click.echo(text)
    if output and fmt:
        emit(data, output, what)
