"""Which device profiles can be reached from this machine now."""

from __future__ import annotations

from .backends import backend_class
from .errors import LatencyError
from .profiles import list_profiles, load_profiles


def device_status(user_file=None) -> list[dict]:
    """One row per profile: name, backend, description, reachable and, if not, why."""
    profiles = load_profiles(user_file)
    rows = []
    for name in list_profiles(user_file):
        prof = profiles[name]
        try:
            reason = backend_class(prof.backend).unavailable_reason(prof.options)
        except LatencyError as err:
            reason = str(err)
        rows.append({"name": name, "backend": prof.backend, "description": prof.description,
                     "reachable": reason is None, "reason": reason})
    return rows
