"""Benchmarks: figures printed and written to data/bench/, checked against bench/targets.toml.

- ``harness``: API processes, ``wrk`` runs and their parsing, fresh-process runs and rounds;
- ``raw``: the raw model in-process (``python -m bench.raw``), the limit the API is read against;
- experiments: ``api_modes`` (each backend, micro-batching on/off, under wrk), ``swap_memory``
  (memory during a hot swap), ``instrumentation`` (its cost, fresh processes and a control);
- ``report``: the targets checked, the table printed, the JSON written;
- commands: ``run`` (``make bench``), ``swap`` (``make bench-swap``), ``oversized``
  (``make bench-body``), ``threads`` and ``overhead`` (by hand).
"""
