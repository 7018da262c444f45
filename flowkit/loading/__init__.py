"""Loading flows from the dags folder. Not public API.

- ``loader``: imports ``dags/*.py`` one file at a time, each in a subprocess with a timeout
  (``python -m flowkit.loading.load_one``), and returns ``(flows, load_errors)``; one
  broken file never hides the others;
- ``sync``: stores what the loader found (specs, module sources) and checks it against
  the store's pools and the settings;
- ``pinned``: the dags folder's helper modules, pinned per flow version, so a run imports
  the helpers its version was stored with.
"""
