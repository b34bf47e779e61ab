#!/usr/bin/env python3
"""ingestd's client: send JSON lines, make demo records, make CURVE certificates.

    python examples/ingest/client.py --endpoint tcp://127.0.0.1:5555 send records.jsonl
    python examples/ingest/client.py gen 1000 | python examples/ingest/client.py send -

The library behind it is ``ingest.client`` (``IngestClient``), in the package beside this
script; ``python -m ingest.client`` is the same command.
"""

import sys

from ingest.client import main

if __name__ == "__main__":
    sys.exit(main())
