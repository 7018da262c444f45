"""ML training in pure Python: build a dataset, train a logistic regression by gradient
descent, evaluate it on held-out data, and register the model only if it is good enough.

Files go to a work folder (param ``workdir``, default: a folder under the system temp
dir): each run's data, weights and metrics in ``runs/<run id>/``, accepted models in
``registry/<model>/v<N>/model.json`` and rejections in ``rejections.json``. Registering is
keyed by the step's idempotency key, so a redelivered step registers one version.

The data is synthetic and deterministic (param ``seed``): a linear decision rule on
features of different scales, with a fraction ``label_noise`` of the labels flipped, so
the best reachable accuracy is about ``1 - label_noise``. With the defaults the model
scores about 0.94 and ``gate`` follows ``register``; ``-p min_accuracy=0.99`` (or
``-p label_noise=0.3``) makes ``gate`` follow ``reject`` instead.
"""

from __future__ import annotations

import csv
import math
import random
import re
from pathlib import Path

from _files import load_json, save_json, workdir, write_csv

from flowkit import Flow, Param, StepContext

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# -- helpers (the file helpers are in dags/_files.py, shared by the examples) -------------
def _run_dir(ctx: StepContext) -> Path:
    return workdir(ctx, "ml", "runs", ctx.run_id)


def _read_csv(path: Path) -> tuple[list[list[float]], list[int]]:
    """Feature rows and labels (the last column)."""
    xs, ys = [], []
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for row in reader:
            xs.append([float(v) for v in row[:-1]])
            ys.append(int(row[-1]))
    return xs, ys


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)  # the same value, without overflow for very negative z
    return e / (1.0 + e)


def _predict(model: dict, x: list[float]) -> float:
    """P(label = 1) for one raw feature row, standardised with the training statistics."""
    z = model["bias"]
    for w, v, m, s in zip(model["weights"], x, model["mean"], model["std"], strict=True):
        z += w * (v - m) / s
    return _sigmoid(z)


# -- steps --------------------------------------------------------------------------------
def extract_features(ctx: StepContext) -> dict:
    """Generate the dataset from the seed, write it as CSV, and split it into train and test."""
    p = ctx.params
    n, k, test_fraction = p["rows"], p["features"], p["test_fraction"]
    if not 20 <= n <= 50_000:
        raise ValueError(f"rows must be between 20 and 50000, got {n}")
    if not 1 <= k <= 20:
        raise ValueError(f"features must be between 1 and 20, got {k}")
    if not 0.05 <= test_fraction <= 0.5:
        raise ValueError(f"test_fraction must be between 0.05 and 0.5, got {test_fraction}")
    if not 0.0 <= p["label_noise"] < 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5), got {p['label_noise']}")
    if not _NAME_RE.match(p["model_name"]):
        raise ValueError(f"model_name {p['model_name']!r} must be 1-64 letters, digits, '-' or '_'")

    rng = random.Random(p["seed"])
    names = [f"f{i + 1}" for i in range(k)]
    centre = [rng.uniform(-50, 50) for _ in range(k)]
    scale = [10 ** rng.uniform(-1, 2) for _ in range(k)]  # 0.1 to 100: standardising matters
    true_w = [rng.choice((-1, 1)) * rng.uniform(0.5, 2.0) for _ in range(k)]
    rows = []
    for _ in range(n):
        z = [rng.gauss(0, 1) for _ in range(k)]
        label = int(sum(w * v for w, v in zip(true_w, z, strict=True)) + 0.3 > 0)
        if rng.random() < p["label_noise"]:
            label = 1 - label
        rows.append([round(c + s * v, 4) for c, s, v in zip(centre, scale, z, strict=True)] + [label])

    run_dir = _run_dir(ctx)
    header = [*names, "label"]
    write_csv(run_dir / "dataset.csv", header, rows)
    order = list(range(n))
    random.Random(p["seed"] + 1).shuffle(order)
    n_test = max(1, round(n * test_fraction))
    test = [rows[i] for i in order[:n_test]]
    train = [rows[i] for i in order[n_test:]]
    write_csv(run_dir / "train.csv", header, train)
    write_csv(run_dir / "test.csv", header, test)
    return {
        "dataset": str(run_dir / "dataset.csv"),
        "train": str(run_dir / "train.csv"),
        "test": str(run_dir / "test.csv"),
        "features": names,
        "train_rows": len(train),
        "test_rows": len(test),
        "positive_rate": round(sum(r[-1] for r in rows) / n, 3),
    }


def train(ctx: StepContext) -> dict:
    """Fit a logistic regression (L2-regularised, full-batch gradient descent); save it as JSON."""
    data = ctx.upstream["extract_features"]
    xs, ys = _read_csv(Path(data["train"]))
    n, k = len(xs), len(xs[0])
    mean = [sum(col) / n for col in zip(*xs, strict=True)]
    std = [
        math.sqrt(sum((v - m) ** 2 for v in col) / n) or 1.0 for col, m in zip(zip(*xs, strict=True), mean, strict=True)
    ]
    xz = [[(v - m) / s for v, m, s in zip(row, mean, std, strict=True)] for row in xs]

    lr, l2, epochs = ctx.params["learning_rate"], ctx.params["l2"], ctx.params["epochs"]
    w, b = [0.0] * k, 0.0
    curve = []
    for epoch in range(epochs):
        grad_w, grad_b, loss = [0.0] * k, 0.0, 0.0
        for row, y in zip(xz, ys, strict=True):
            z = b + sum(wi * v for wi, v in zip(w, row, strict=True))
            prob = _sigmoid(z)
            err = prob - y
            grad_b += err
            for j in range(k):
                grad_w[j] += err * row[j]
            # log(1 + e^z) - y*z, computed without overflow
            loss += max(z, 0.0) + math.log1p(math.exp(-abs(z))) - y * z
        w = [wi - lr * (g / n + l2 * wi) for wi, g in zip(w, grad_w, strict=True)]
        b -= lr * grad_b / n
        if epoch % max(1, epochs // 10) == 0 or epoch == epochs - 1:
            curve.append([epoch, round(loss / n + 0.5 * l2 * sum(wi * wi for wi in w), 5)])
        if not math.isfinite(loss):
            raise ArithmeticError(f"training diverged at epoch {epoch}; lower learning_rate ({lr})")

    model = {
        "kind": "logistic_regression",
        "features": data["features"],
        "weights": w,
        "bias": b,
        "mean": mean,
        "std": std,
        "epochs": epochs,
        "learning_rate": lr,
        "l2": l2,
        "loss_curve": curve,
    }
    path = _run_dir(ctx) / "model.json"
    save_json(path, model)
    return {"model": str(path), "train_rows": n, "final_train_loss": curve[-1][1], "loss_curve": curve}


def evaluate(ctx: StepContext) -> dict:
    """Score the model on the held-out test split: accuracy, log-loss, precision, recall."""
    model = load_json(Path(ctx.upstream["train"]["model"]), None)
    assert isinstance(model, dict)
    xs, ys = _read_csv(Path(ctx.upstream["extract_features"]["test"]))
    eps = 1e-12
    tp = fp = tn = fn = 0
    log_loss = 0.0
    for x, y in zip(xs, ys, strict=True):
        prob = min(max(_predict(model, x), eps), 1 - eps)
        log_loss -= y * math.log(prob) + (1 - y) * math.log(1 - prob)
        pred = int(prob >= 0.5)
        tp += pred == 1 and y == 1
        fp += pred == 1 and y == 0
        tn += pred == 0 and y == 0
        fn += pred == 0 and y == 1
    n = len(ys)
    positives = sum(ys)
    metrics = {
        "test_rows": n,
        "accuracy": round((tp + tn) / n, 4),
        "log_loss": round(log_loss / n, 4),
        "precision": round(tp / (tp + fp), 4) if tp + fp else 0.0,
        "recall": round(tp / (tp + fn), 4) if tp + fn else 0.0,
        "baseline_accuracy": round(max(positives, n - positives) / n, 4),  # always the majority class
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }
    save_json(_run_dir(ctx) / "metrics.json", metrics)
    return metrics


def gate(ctx: StepContext) -> str:
    """Branch: register the model if its test accuracy reaches ``min_accuracy``, else reject it."""
    return "register" if ctx.upstream["evaluate"]["accuracy"] >= ctx.params["min_accuracy"] else "reject"


def register(ctx: StepContext) -> dict:
    """Copy the model and its metrics into the registry as the next version (once per run)."""
    name = ctx.params["model_name"]
    registry = workdir(ctx, "ml", "registry", name)
    for existing in sorted(registry.glob("v*/model.json")):  # a redelivery: already registered
        entry = load_json(existing, {})
        assert isinstance(entry, dict)
        if entry.get("idempotency_key") == ctx.idempotency_key:
            return {
                "model": name,
                "version": entry["version"],
                "path": str(existing),
                "accuracy": entry["metrics"]["accuracy"],
                "already_registered": True,
            }
    run_dir = _run_dir(ctx)
    model, metrics = load_json(run_dir / "model.json", None), load_json(run_dir / "metrics.json", None)
    assert isinstance(model, dict) and isinstance(metrics, dict)
    numbers = [int(d.name[1:]) for d in registry.glob("v*") if d.name[1:].isdigit()]
    version = max(numbers, default=0) + 1
    while True:  # mkdir is atomic: two runs registering at once get different versions
        try:
            (registry / f"v{version}").mkdir()
            break
        except FileExistsError:
            version += 1
    entry = {
        "name": name,
        "version": version,
        "idempotency_key": ctx.idempotency_key,
        "run_id": ctx.run_id,
        "params": ctx.params,
        "metrics": metrics,
        "model": model,
    }
    path = registry / f"v{version}" / "model.json"
    save_json(path, entry)
    latest = load_json(registry / "latest.json", {})
    assert isinstance(latest, dict)
    if version > latest.get("version", 0):
        save_json(registry / "latest.json", {"version": version, "path": str(path)})
    ctx.log.info("registered %s v%s (accuracy %.3f)", name, version, metrics["accuracy"])
    return {
        "model": name,
        "version": version,
        "path": str(path),
        "accuracy": metrics["accuracy"],
        "already_registered": False,
    }


def reject(ctx: StepContext) -> dict:
    """Record why the model was not registered."""
    metrics = load_json(_run_dir(ctx) / "metrics.json", None)
    assert isinstance(metrics, dict)
    reason = (
        f"test accuracy {metrics['accuracy']:.4f} is below min_accuracy "
        f"{ctx.params['min_accuracy']:.4f} (majority-class baseline "
        f"{metrics['baseline_accuracy']:.4f})"
    )
    path = workdir(ctx, "ml") / "rejections.json"
    rejections = load_json(path, {})
    assert isinstance(rejections, dict)
    if ctx.idempotency_key not in rejections:
        rejections[ctx.idempotency_key] = {
            "model": ctx.params["model_name"],
            "run_id": ctx.run_id,
            "reason": reason,
            "metrics": metrics,
        }
        save_json(path, rejections)
    return {"rejected": True, "reason": reason}


flow = (
    Flow(
        "ml_training",
        owner="ml",
        tags=["ml", "training", "example"],
        description="Generate data, train a logistic regression, evaluate, gate, register or reject.",
        params={
            "seed": Param(int, default=7, help="seed of the synthetic dataset"),
            "rows": Param(int, default=800, help="rows in the dataset"),
            "features": Param(int, default=4, help="number of features (1-20)"),
            "test_fraction": Param(float, default=0.25, help="share of rows held out for testing"),
            "label_noise": Param(float, default=0.05, help="share of labels flipped at random"),
            "epochs": Param(int, default=150, help="gradient-descent epochs"),
            "learning_rate": Param(float, default=0.5),
            "l2": Param(float, default=0.001, help="L2 penalty on the weights"),
            "min_accuracy": Param(float, default=0.85, help="test accuracy needed to register"),
            "model_name": Param(str, default="demo-classifier", help="name in the model registry"),
            "workdir": Param(str, default="", help="folder for the demo's files"),
        },
    )
    .step("extract_features", extract_features, timeout="60s", writes=["ml://datasets/features"])
    .step(
        "train",
        train,
        after="extract_features",
        retries=2,
        retry_backoff="1s",
        timeout="120s",
        reads=["ml://datasets/features"],
        writes=["ml://models/candidate"],
    )
    .step(
        "evaluate",
        evaluate,
        after=["extract_features", "train"],
        timeout="60s",
        reads=["ml://models/candidate"],
        writes=["ml://metrics"],
    )
    .branch("gate", gate, after="evaluate")
    .step("register", register, after="gate", retries=2, reads=["ml://models/candidate"], writes=["ml://registry"])
    .step("reject", reject, after="gate")
)
