"""``python -m ingest {start,stop,status,...}``: the same as ``python ingestd.py``."""

from .daemon import Ingestd

Ingestd.main()
