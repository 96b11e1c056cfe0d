"""The redis backend: rankd over a Redis / Valkey Cluster (README.md in this directory)."""
