"""The embedded engine's on-disk formats: frames, snapshot, journal, recovery, fork-save, the
data directory, offline check/repair, and the row layouts (``rows.py``).

Only the embedded backend (``service/backend/``) and offline tools import this package; the
rest of the service sees the backend protocols. Nothing here imports ``service``.
"""
