"""Building blocks of ingestd, each with one job (see ingestd.py for how they fit together)."""
