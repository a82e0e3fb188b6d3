"""``python bench/hot_reads.py [options]`` (``--help`` lists them): the throughput of the two hot reads (``GET
/api/rooms``, ``GET /api/rooms/{room}/tracks``) for two source revisions in one run, and their ratio. The bench is
``spotikbench.hot_reads`` (bench/spotikbench/, importable as ``spotikbench`` because running this script puts bench/
on ``sys.path``); see bench/README.md."""

from spotikbench.hot_reads import main

if __name__ == "__main__":
    raise SystemExit(main())
