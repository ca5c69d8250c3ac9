"""Machine description and JSON output of the benchmark scripts (both from the package's
``io`` module, re-exported here for the scripts)."""

from consensus_tutorial.io import atomic_json as write_json
from consensus_tutorial.io import machine_info

__all__ = ["machine_info", "write_json"]
