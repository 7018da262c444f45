"""Time flowkit's publish path alone: ``CeleryDispatcher.dispatch_many`` of N attempts to a
fresh queue, against raw Celery's ``send_task`` of as many
messages one by one on the same broker.

    .venv/bin/python bench/publish.py --broker amqp --n 2000 --repeat 5

No worker runs: the messages are counted in the queue and the queue is deleted afterwards.
Each repeat publishes to a queue of its own (RabbitMQ: a random name; Redis: a random
name in database 3 unless ``BENCH_REDIS_DBS`` says otherwise, its first entry).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowkit.config import Settings  # noqa: E402
from flowkit.dispatch.celery import CeleryDispatcher  # noqa: E402
from flowkit.dispatch.task_names import EXECUTE_TASK  # noqa: E402
from flowkit.execution.celery_app import make_app  # noqa: E402
from flowkit.spec import StepSpec  # noqa: E402
from flowkit.store.machine import Dispatch  # noqa: E402

AMQP = os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
REDIS_DB = os.environ.get("BENCH_REDIS_DBS", "3").split(",")[0]


def broker_url(broker: str) -> str:
    return AMQP if broker == "amqp" else f"{REDIS}/{REDIS_DB}"


def items(n: int) -> list[Dispatch]:
    run = str(uuid.uuid4())
    return [Dispatch(run, "wide", StepSpec(name=f"m{i:04d}", fn="x:y"), 1, str(uuid.uuid4())) for i in range(n)]


def depth_and_delete(app: Any, queue: str, n: int) -> int:
    """The queue's depth once it reaches ``n`` (RabbitMQ counts a publish of another
    connection some milliseconds after it was written), or after 10 s."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        deadline = time.monotonic() + 10
        while True:
            depth = int(channel.queue_declare(queue=queue, passive=True).message_count)
            if depth >= n or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        channel.queue_delete(queue)
        return depth


def one(broker: str, n: int, side: str) -> float:
    queue = f"bench.publish.{uuid.uuid4().hex[:8]}"
    settings = Settings(broker_url=broker_url(broker), database_url="sqlite://", default_queue=queue)
    app = make_app(settings)
    dispatcher = CeleryDispatcher(app, settings)
    batch = items(n)
    with app.producer_or_acquire() as producer:  # connect before timing
        producer.maybe_declare(app.amqp.queues[queue])
    try:
        started = time.perf_counter()
        if side == "flowkit":
            failed = dispatcher.dispatch_many(batch)
            assert not failed, f"{len(failed)} not published"
        else:
            with app.producer_or_acquire() as producer:
                for item in batch:
                    app.send_task(
                        EXECUTE_TASK,
                        args=[item.run_id, item.step.name, 1],
                        task_id=item.task_id,
                        queue=queue,
                        producer=producer,
                    )
        took = time.perf_counter() - started
        depth = depth_and_delete(app, queue, n)
        assert depth == n, f"{depth} of {n} messages in the queue"
        return took
    finally:
        app.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=["redis", "amqp"], default="amqp")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"flowkit": [], "raw": []}
    for r in range(args.repeat):
        for side in ("raw", "flowkit") if r % 2 == 0 else ("flowkit", "raw"):
            times[side].append(one(args.broker, args.n, side))
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    for side in ("raw", "flowkit"):
        print(
            f"{args.broker} {side:8s} {args.n} publishes: median {statistics.median(times[side]):.3f} s "
            f"(min {min(times[side]):.3f})"
        )
    ratio = statistics.median(times["flowkit"]) / statistics.median(times["raw"])
    print(f"ratio flowkit / raw send_task: {ratio:.2f}x (load {load})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
