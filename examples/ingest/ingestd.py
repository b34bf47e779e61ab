#!/usr/bin/env python3
"""ingestd: receive JSON records over ZeroMQ, store them durably, acknowledge after COMMIT.

    python examples/ingest/ingestd.py --bind tcp://127.0.0.1:5555 \\
        --db sqlite:////var/lib/ingestd/ingest.db {start,stop,restart,status,reload,run}

The daemon is the package beside this script, ``ingest`` (``ingest/daemon.py``); Python puts
this script's directory on ``sys.path``, so ``import ingest`` finds it. ``python -m ingest``
does the same from this directory (or with it on ``PYTHONPATH``).
"""

from ingest.daemon import Ingestd

if __name__ == "__main__":
    Ingestd.main()
