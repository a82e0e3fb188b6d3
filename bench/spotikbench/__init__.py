"""Spotik's benchmarks as a package, one job per module, for the scripts in bench/ (``python bench/realtime.py``,
``python bench/middleware_overhead.py``: running a script puts bench/ on ``sys.path``, so this package imports as
``spotikbench``) and for any later command that runs several benchmarks in one go.

Shared by every benchmark:

* ``tools``: loopback ports, CPU pinning, a clean server environment, stopping a process, progress lines,
  distributions;
* ``servers``: ``spotik serve`` and the baseline apps as processes on loopback (readiness, RSS, CPU, log);
* ``services``: the PostgreSQL database created for a run, Redis checks and clean-up;
* ``report``: where reports go, their stamp and machine description, writing and showing JSON + Markdown;
* ``load``: ``wrk`` and the httpx2 loop as load generators.

The real-time bench (``realtime``: options and ``main``):

* ``client_worker``: one subscriber process (spawned; ``worker_main`` is its entry point);
* ``clients``: the driver's side of those processes;
* ``fixtures``: Spotik's users, rooms and track, made through its REST API;
* ``apps``: how the bench reaches each app (frames, socket URLs, the request that broadcasts);
* ``memory``, ``latency``: the measurements;
* ``phases``: the run, one phase per app and set-up;
* ``realtime_report``: targets, Markdown and JSON.

The middleware overhead bench: ``overhead`` (options, server pairs, rounds, summary, report, ``main``).
"""
