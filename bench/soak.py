"""``python bench/soak.py [options]`` (``make soak``; ``--help`` lists the options): the soak test, a steady mixed
load on two instances sharing PostgreSQL and Redis for ``--minutes`` (10), sampled every ``--interval`` seconds, with
the slopes of RSS and descriptors over the last half. The code is ``spotikbench.soak`` (bench/spotikbench/); see
bench/README.md and docs/reliability.md, scenario 7."""

from spotikbench.soak import main

if __name__ == "__main__":
    raise SystemExit(main())
