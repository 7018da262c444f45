"""The public surface of ``import flowkit`` and what importing the DSL costs."""

from __future__ import annotations

import json
import subprocess
import sys

import flowkit

EXPECTED_ALL = [
    "Flow",
    "Param",
    "UNSET",
    "Deadline",
    "FlowDone",
    "Dataset",
    "StepContext",
    "Retry",
    "Skip",
    "NotYet",
    "secret",
    "Ref",
    "CallbackContext",
    "FlowkitError",
    "DefinitionError",
    "CycleError",
    "UnknownStepError",
    "DuplicateStepError",
    "InvalidParamError",
    "DagLoadError",
]


def test_all_is_pinned():
    assert flowkit.__all__ == EXPECTED_ALL


def test_every_public_name_exists():
    for name in flowkit.__all__:
        assert getattr(flowkit, name) is not None, name
    assert issubclass(flowkit.CycleError, flowkit.DefinitionError)
    assert issubclass(flowkit.DagLoadError, flowkit.FlowkitError)


def test_star_import_gives_exactly_all():
    namespace: dict[str, object] = {}
    exec("from flowkit import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(EXPECTED_ALL)


def test_importing_the_dsl_loads_no_heavy_dependency():
    heavy = ["celery", "sqlalchemy", "graphviz", "click", "kombu"]
    code = (
        "import json, sys; import flowkit.dsl; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))"
    )
    assert _heavy_modules_after(code) == []


def test_defining_a_flow_loads_no_heavy_dependency():
    heavy = ["celery", "sqlalchemy", "graphviz", "click", "kombu"]
    code = (
        "import json, sys\n"
        "from flowkit import Flow\n"
        "Flow('f', schedule='*/5 * * * *').step('a', lambda: None).spec().to_json()\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))\n"
    )
    assert _heavy_modules_after(code) == []


def _heavy_modules_after(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; it prints the heavy modules it ended up importing."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(proc.stdout)
