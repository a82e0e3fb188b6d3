"""``python bench/middleware_overhead.py [options]`` (``--help`` lists them): what the monitoring middleware stack
costs in throughput. The bench is ``spotikbench.overhead`` (bench/spotikbench/, importable as ``spotikbench``
because running this script puts bench/ on ``sys.path``); see bench/README.md."""

from spotikbench.overhead import main

if __name__ == "__main__":
    raise SystemExit(main())
