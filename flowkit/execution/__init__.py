"""What runs on a worker. Not public API.

Imports go one way, each module using only those below it:

- ``celery_app``: the Celery app and its configuration (the ``celery -A`` entry point is
  ``workers/app.py``);
- ``tasks``: the Celery tasks ``flowkit.execute`` and ``flowkit.callback``, and the stop command;
- ``attempt`` (claim, execute, record one step attempt), ``callbacks`` (run one callback),
  ``cancel`` (stop a cancelled attempt);
- ``runtime``: the worker process's state (store, caches, heartbeats), over ``flowkit.dispatch``;
- ``encoding``, ``shell``, ``timeouts``, ``success``: what a step's body and outcome need.

This package's ``__init__`` imports nothing: :mod:`flowkit.dsl` uses :mod:`.shell` to check a
shell step's definition without loading Celery or the store.
"""
