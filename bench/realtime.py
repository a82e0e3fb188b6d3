"""``python bench/realtime.py [options]`` (``--help`` lists them): real-time figures of Spotik's ``/ws`` next to a
minimal app on the same server stack. The bench is ``spotikbench.realtime`` (bench/spotikbench/, importable as
``spotikbench`` because running this script puts bench/ on ``sys.path``); see bench/README.md."""

from spotikbench.realtime import main

if __name__ == "__main__":
    raise SystemExit(main())
