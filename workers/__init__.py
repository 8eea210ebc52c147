"""Background workers: persistence of the ingest streams (media, retention come later)."""
