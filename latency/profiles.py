"""Device profiles: data (``devices.json`` shipped in the package, plus an optional user file)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import LatencyError, UnknownDeviceError
from .protocol import ProtocolConfig

USER_FILE_ENV = "LATENCY_DEVICES"
DEFAULT_USER_FILE = Path.home() / ".config" / "donna-nas" / "devices.json"


@dataclass(frozen=True)
class Profile:
    """A named device: which backend measures it, with which options and protocol."""

    name: str  # the --device name
    backend: str  # a name in the backend registry
    description: str = ""  # one line for `latency devices`
    options: dict = field(default_factory=dict)  # passed to the backend constructor
    protocol: dict = field(default_factory=dict)  # overrides of ProtocolConfig fields
    source: str = "builtin"  # file the profile came from

    def protocol_config(self) -> ProtocolConfig:
        """The resolved measurement protocol of this profile."""
        return ProtocolConfig.from_dict(self.protocol)

    def to_dict(self) -> dict:
        """JSON-ready form (used in results and table files)."""
        return {"name": self.name, "backend": self.backend, "description": self.description,
                "options": dict(self.options), "protocol": dict(self.protocol), "source": self.source}


def _read(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise LatencyError(f"cannot read device profiles from {path}: {err}") from None
    if not isinstance(data.get("profiles"), dict):
        raise LatencyError(f"{path}: expected an object with a 'profiles' mapping")
    return data["profiles"]


def _make(name: str, entry: dict, source: str, base: dict[str, Profile]) -> Profile:
    """Build one profile; ``"extends": NAME`` starts from an existing profile and overrides it."""
    parent = entry.get("extends")
    if parent is not None and parent not in base:
        raise LatencyError(f"profile {name!r} in {source} extends unknown profile {parent!r}")
    start = base[parent].to_dict() if parent else {"backend": None, "description": "", "options": {}, "protocol": {}}
    backend = entry.get("backend", start["backend"])
    if not backend:
        raise LatencyError(f"profile {name!r} in {source} names no backend")
    return Profile(name=name, backend=backend, description=entry.get("description", start["description"]),
                   options={**start["options"], **entry.get("options", {})},
                   protocol={**start["protocol"], **entry.get("protocol", {})}, source=source)


def _user_file(user_file: Path | str | None) -> Path | None:
    if user_file is not None:
        return Path(user_file)
    env = os.environ.get(USER_FILE_ENV)
    if env:
        return Path(env)
    return DEFAULT_USER_FILE if DEFAULT_USER_FILE.exists() else None


def load_profiles(user_file: Path | str | None = None) -> dict[str, Profile]:
    """All profiles: the shipped ones, then those of the user file.

    Args:
        user_file: JSON file with ``{"profiles": {name: {...}}}``; default ``$LATENCY_DEVICES`` or
            ``~/.config/donna-nas/devices.json`` when it exists. A user profile may not reuse a
            shipped name (use ``"extends"`` with a new name instead).
    """
    shipped = resources.files("latency").joinpath("devices.json")
    profiles: dict[str, Profile] = {}
    for name, entry in _read(Path(str(shipped))).items():
        profiles[name] = _make(name, entry, "builtin", profiles)
    path = _user_file(user_file)
    if path is not None:
        for name, entry in _read(path).items():
            if name in profiles:
                raise LatencyError(f"user profile {name!r} in {path} duplicates a known profile; "
                                   f"give it a new name and use \"extends\": {name!r}")
            profiles[name] = _make(name, entry, str(path), profiles)
    return profiles


def list_profiles(user_file: Path | str | None = None) -> list[str]:
    """Names of all known device profiles."""
    return sorted(load_profiles(user_file))


def get_profile(name: str | Profile, user_file: Path | str | None = None) -> Profile:
    """Look a profile up by name.

    Raises:
        UnknownDeviceError: naming the known profiles.
    """
    if isinstance(name, Profile):
        return name
    profiles = load_profiles(user_file)
    if name not in profiles:
        raise UnknownDeviceError(f"unknown device {name!r}; known devices: {', '.join(sorted(profiles))}")
    return profiles[name]
