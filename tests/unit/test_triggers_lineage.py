"""The trigger chain both ways in `flowkit lineage` (text and --json), the lineage picture
and the HTML report, for triggered runs and for `flowkit trigger --parent`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from flowkit import render as rd
from flowkit.cli import main

from ..store_backends import inline_harness
from .test_triggers import DAGS, consume, run_flow, triggered


def cli(store: Any, *args: str) -> Any:
    base = ["--database-url", store.url, "--broker-url", "memory://", "--dags-folder", DAGS]
    return CliRunner().invoke(main, [*base, *args])


def test_lineage_shows_the_chain_both_ways_with_its_events(backend_store) -> None:  # type: ignore[no-untyped-def]
    h = inline_harness(backend_store, DAGS)
    # Given: orders -> orders_data (dataset write) and orders -> orders_report (flow end)
    source = run_flow(h, "orders")
    consume(h)
    (data_run,) = triggered(h, "orders_data")
    (report_run,) = triggered(h, "orders_report")
    # and a manual run recorded as the report run's child with --parent
    manual = cli(backend_store, "trigger", "writer_a", "--parent", report_run["id"][:8])
    assert manual.exit_code == 0, manual.output
    manual_id = manual.output.strip()

    # When: lineage of the source run (down) and of the report run (up and down)
    down = cli(backend_store, "lineage", source[:8])
    assert down.exit_code == 0, down.output
    assert "triggered (recursively down):" in down.output
    assert f"-> orders_data run {data_run['id']}" in down.output
    assert f"-> orders_report run {report_run['id']}" in down.output
    assert f"    -> writer_a run {manual_id}" in down.output  # a second generation, indented
    assert 'dataset "s3://lake/orders" written by step load' in down.output
    assert f'flow "orders" run {source[:8]} ended success' in down.output

    up = cli(backend_store, "lineage", manual_id, "--json")
    assert up.exit_code == 0, up.output
    chain = json.loads(up.output)
    (parent,) = chain["triggered_by"]
    assert parent["run"]["id"] == report_run["id"] and parent["via"] == "parent"
    (grand,) = parent["triggered_by"]
    assert grand["run"]["id"] == source and grand["events"][0]["key"] == f"run:{source}:success"

    # The picture and the report say it too
    dot = rd.lineage_dot(rd.load_lineage(backend_store, source))
    assert f'"run:{report_run["id"]}" -> "run:{manual_id}"' in dot
    page = rd.report_html(rd.load_run_view(backend_store, report_run["id"]), graph_svg="<svg/>")
    assert '<h2 id="lineage">Lineage</h2>' in page and "Triggered by" in page
    assert f"run:{source}:success" in page and manual_id in page


def test_lineage_json_needs_a_run(sqlite_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = cli(sqlite_store, "lineage", "--dataset", "s3://x/y", "--json")
    assert res.exit_code == 2 and res.output.strip().endswith("give a RUN id, not --dataset")
