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


def unreachable_reason(device) -> str | None:
    """Why the profile ``device`` (a name or :class:`Profile`) cannot be measured here; None when it can."""
    from .profiles import get_profile

    profile = get_profile(device)
    try:
        return backend_class(profile.backend).unavailable_reason(profile.options)
    except LatencyError as err:
        return str(err)
