"""Pictures of flows and runs: Graphviz DOT source, a timeline SVG and a one-page HTML report.

Everything that builds text here is a pure function of plain data (a :class:`FlowSpec`, the
rows the store returns), so the output is deterministic: nodes in flow order, edges and
lineage nodes sorted, ids derived from names, every label escaped. Only :func:`dot_to`
runs the ``dot`` binary (through the ``graphviz`` package, imported there), and only the
``load_*`` helpers read the store. Importing this module loads neither Celery, SQLAlchemy
nor graphviz.

What is drawn:

* a step's *kind* picks its shape (:data:`KIND_STYLES`: task box, branch diamond, map 3-D
  box with ``over``/``max_parallel``, shell command box, approval octagon with its timeout,
  compensation dashed box in a dashed cluster with "undoes" edges); a step with a ``pool``
  attribute gets a dark pool badge; the edge style says the downstream step's trigger rule;
* with a run, the fill colour is the step state (:data:`STEP_STATE_COLORS`), and the node
  says attempts, retries and durations; a map step is one node with its instances counted
  by state; an approval says who decided and why; compensation steps the run started are
  drawn, and the run's outcome is in the title and legend;
* flows larger than ``cluster_threshold`` steps are grouped into clusters (by name prefix,
  else by topological layers) or, with ``collapse=True``, drawn one node per group.

The package holds one module per picture: :mod:`.graph` (DOT of flows and runs),
:mod:`.lineage`, :mod:`.timeline` and :mod:`.report` (HTML), over :mod:`.common` (styles,
escaping, :class:`RunView`).
"""

from __future__ import annotations

from .common import (
    ATTEMPT_STATE_COLORS,
    DEFAULT_CLUSTER_THRESHOLD,
    DEFAULT_MAX_GROUP,
    KIND_STYLES,
    STEP_STATE_COLORS,
    TRIGGER_EDGE_STYLES,
    RenderError,
    RunView,
    load_run_view,
)
from .graph import dot_to, flow_dot, group_steps, run_dot, svg_for_html
from .lineage import (
    DatasetLineage,
    Lineage,
    dataset_lineage_dot,
    dataset_lineage_text,
    lineage_dot,
    lineage_text,
    load_dataset_lineage,
    load_lineage,
)
from .report import report_html
from .timeline import svg_to_png, timeline_svg

__all__ = [
    "ATTEMPT_STATE_COLORS",
    "DEFAULT_CLUSTER_THRESHOLD",
    "DEFAULT_MAX_GROUP",
    "KIND_STYLES",
    "STEP_STATE_COLORS",
    "TRIGGER_EDGE_STYLES",
    "DatasetLineage",
    "Lineage",
    "RenderError",
    "RunView",
    "dataset_lineage_dot",
    "dataset_lineage_text",
    "dot_to",
    "flow_dot",
    "group_steps",
    "lineage_dot",
    "lineage_text",
    "load_dataset_lineage",
    "load_lineage",
    "load_run_view",
    "svg_to_png",
    "report_html",
    "run_dot",
    "svg_for_html",
    "timeline_svg",
]
