"""``python bench/run.py [options]`` (``--help`` lists them), the same as ``spotik bench``: every benchmark in one
bounded run, written to bench/report/REPORT.md with its figures. The code is ``spotikbench.suite``
(bench/spotikbench/); see bench/README.md."""

from spotikbench.suite import main

if __name__ == "__main__":
    raise SystemExit(main())
