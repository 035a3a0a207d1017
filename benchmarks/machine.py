"""The CPU a benchmark ran on, for its results: ``platform.processor()`` is empty on Linux."""

from __future__ import annotations

import platform


def cpu_description() -> str:
    """``model name (vendor family F model M)`` from ``/proc/cpuinfo`` where it exists (a VM's model
    name can be generic, e.g. "Intel(R) Xeon(R) Processor": family and model tell the core), else
    ``platform.processor()`` or the machine type."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if not line.strip():
                    break  # the first processor's block
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    return (f"{fields['model name']} ({fields.get('vendor_id', '?')} family {fields.get('cpu family', '?')} "
            f"model {fields.get('model', '?')})")
