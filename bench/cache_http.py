"""``python bench/cache_http.py [options]`` (``--help`` lists them): the queue read cached vs uncached against real
servers on SQLite and PostgreSQL, and the hit rate of a read-mostly workload. The bench is
``spotikbench.cache_http``; see bench/README.md."""

from spotikbench.cache_http import main

if __name__ == "__main__":
    raise SystemExit(main())
