"""Offline training for edgemart's models; never deployed (needs the `train` extra)."""
