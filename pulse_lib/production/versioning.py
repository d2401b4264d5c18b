"""Versioned artefacts: a content hash and the recipe beside each dataset, MDP, agent.

PulseRL kept code, datasets, MDP definitions and agents under version control. Here each
artefact (a file or a directory) gets a small JSON **manifest** beside it,
``<artefact>.manifest.json``, written atomically, that records

- ``content``: the sha256 of the artefact's bytes (of each file, for a directory, and
  one digest over the sorted ``(relative path, digest)`` list);
- ``config``: the settings that made it (any JSON-serialisable mapping or a dataclass);
- ``schema``: the :class:`FeatureSchema` of its rows (ordered feature names and a
  feature version), if it has one;
- ``code``: the ``pulse_lib`` version and, in a git checkout, the commit (and whether
  the working tree had uncommitted changes);
- ``parents``: the manifests it was made from (kind, name and content digest), so a
  decision can be traced back to the events that produced it.

:func:`verify` recomputes the digest and raises
:class:`~pulse_lib.errors.DataFormatError` naming the file that changed. A
:class:`VersionedAgent` wraps a trained
:class:`~pulse_lib.pulserl.agents.QuantileQNetwork` with its schema and refuses
(:class:`~pulse_lib.errors.SchemaError`, naming the difference) to score data
of another feature list or feature version.

>>> from pulse_lib.production.versioning import FeatureSchema
>>> a = FeatureSchema(("x", "y"), "1")
>>> a.difference(FeatureSchema(("x", "z"), "1"))
"feature 1 is 'y' here but 'z' there"
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import math
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pulse_lib.errors import ConfigError, DataFormatError, SchemaError
from pulse_lib.io import atomic_path, atomic_write, sha256_and_size
from pulse_lib.pulserl.features import FEATURE_NAMES

__all__ = [
    "DEFAULT_SCHEMA",
    "FEATURE_VERSION",
    "MANIFEST_FORMAT",
    "MANIFEST_SUFFIX",
    "FeatureSchema",
    "MDPDefinition",
    "Manifest",
    "VersionedAgent",
    "code_version",
    "content_hash",
    "load_mdp",
    "manifest_path",
    "read_manifest",
    "read_versioned_parquet",
    "save_mdp",
    "verify",
    "write_manifest",
    "write_versioned_parquet",
]

#: Version of the 63 features' definitions (:mod:`pulse_lib.pulserl.features`). Bump it
#: whenever a feature's meaning or scaling changes, even if its name stays: an agent
#: trained on version 1 then refuses version 2 data.
FEATURE_VERSION: str = "1"
#: A manifest is ``<artefact name>`` + this suffix, in the artefact's folder.
MANIFEST_SUFFIX: str = ".manifest.json"
#: The ``format`` field every manifest carries; a reader refuses any other.
MANIFEST_FORMAT: str = "pulse-manifest/1"

_KIND = re.compile(r"[a-z][a-z0-9_]{0,39}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class FeatureSchema:
    """The columns a table's rows carry, in order, and the version of their meaning."""

    names: tuple[str, ...]  #: feature names, in the order of the observation vector
    version: str  #: feature version: bumped when a feature's definition changes

    def __post_init__(self) -> None:
        if isinstance(self.names, (str, bytes)) or not isinstance(self.names, Sequence):
            raise ConfigError(
                f"FeatureSchema.names must be a sequence of names, got {self.names!r}"
            )
        names = tuple(self.names)
        if not names:
            raise ConfigError("FeatureSchema.names is empty: at least one feature")
        bad = [n for n in names if not isinstance(n, str) or not n]
        if bad:
            raise ConfigError(
                f"FeatureSchema.names must be non-empty strings, got {bad[0]!r}"
            )
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ConfigError(f"FeatureSchema.names repeats {name!r}")
            seen.add(name)
        if not isinstance(self.version, str) or not self.version:
            raise ConfigError(
                f"FeatureSchema.version must be a non-empty string, got "
                f"{self.version!r}"
            )
        object.__setattr__(self, "names", names)

    @property
    def width(self) -> int:
        """Number of features."""
        return len(self.names)

    @property
    def fingerprint(self) -> str:
        """sha256 of the names and version (12 hex digits): equal schemas, equal
        fingerprints."""
        text = json.dumps([list(self.names), self.version])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "version": self.version}

    @classmethod
    def from_dict(cls, data: Any, where: str = "schema") -> FeatureSchema:
        """A schema from :meth:`to_dict`'s output; a malformed one is a
        DataFormatError naming ``where``."""
        if not isinstance(data, Mapping) or set(data) != {"names", "version"}:
            raise DataFormatError(
                f"{where} must be an object with keys 'names' and 'version', got "
                f"{_short(data)}"
            )
        try:
            return cls(tuple(data["names"]), data["version"])
        except (ConfigError, TypeError) as exc:
            raise DataFormatError(f"{where} is malformed: {exc}") from exc

    def difference(self, other: FeatureSchema) -> str | None:
        """``None`` if equal, else the first difference in words (this schema
        first)."""
        if self.version != other.version:
            return f"feature version {self.version!r} here but {other.version!r} there"
        if self.names == other.names:
            return None
        if self.width != other.width:
            missing = [n for n in self.names if n not in other.names]
            extra = [n for n in other.names if n not in self.names]
            parts = [f"{self.width} features here but {other.width} there"]
            if missing:
                parts.append(f"missing there: {missing[:3]}")
            if extra:
                parts.append(f"only there: {extra[:3]}")
            return "; ".join(parts)
        i = next(k for k, (a, b) in enumerate(zip(self.names, other.names)) if a != b)
        return f"feature {i} is {self.names[i]!r} here but {other.names[i]!r} there"


#: The 63 PulseRL features (:data:`~pulse_lib.pulserl.features.FEATURE_NAMES`) at
#: :data:`FEATURE_VERSION`.
DEFAULT_SCHEMA = FeatureSchema(FEATURE_NAMES, FEATURE_VERSION)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- hashing


def _directory_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise DataFormatError(
                f"{path} is a symbolic link: a versioned directory holds regular "
                "files only (a link's target could change without the hash changing)"
            )
        if path.is_file():
            files.append(path)
    return files


def content_hash(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``content`` record of a file or directory.

    A file: ``{"type": "file", "sha256": ..., "bytes": ...}``. A directory:
    ``{"type": "directory", "sha256": ..., "bytes": total, "files": {relative path:
    {"sha256", "bytes"}}}`` where the directory's digest is the sha256 of the lines
    ``<relative path>\\t<file digest>\\n`` in sorted order (so renaming a file changes
    it too). Paths use ``/`` on every platform.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such artefact: {p}")
    if p.is_file():
        sha, size = sha256_and_size(p)
        return {"type": "file", "sha256": sha, "bytes": size}
    if not p.is_dir():
        raise DataFormatError(f"{p} is neither a file nor a directory")
    files: dict[str, dict[str, Any]] = {}
    for f in _directory_files(p):
        sha, size = sha256_and_size(f)
        files[f.relative_to(p).as_posix()] = {"sha256": sha, "bytes": size}
    listing = "".join(
        f"{name}\t{rec['sha256']}\n" for name, rec in sorted(files.items())
    )
    return {
        "type": "directory",
        "sha256": hashlib.sha256(listing.encode()).hexdigest(),
        "bytes": sum(rec["bytes"] for rec in files.values()),
        "files": files,
    }


# --------------------------------------------------------------------------- code


@functools.lru_cache(maxsize=1)
def _git_state(root: str) -> tuple[str | None, bool | None]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", root, *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if commit is None or not re.fullmatch(r"[0-9a-f]{40}", commit):
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None else bool(status))


def code_version() -> dict[str, Any]:
    """``{"pulse_lib": version, "git_commit": sha or None, "git_dirty": bool or
    None}``.

    The commit is that of the checkout ``pulse_lib`` is imported from (``None`` for an
    installed copy, or without git); ``git_dirty`` says whether tracked files had
    uncommitted changes. Read once per process.
    """
    import pulse_lib

    package = Path(pulse_lib.__file__).resolve().parent
    root = package.parent
    commit, dirty = (None, None)
    if (root / ".git").exists():
        commit, dirty = _git_state(str(root))
    return {
        "pulse_lib": pulse_lib.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
    }


# --------------------------------------------------------------------------- config


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as plain JSON (dataclasses and tuples converted); anything else, NaN
    or a non-string key is a ConfigError naming ``where``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where} has a non-string key {key!r}")
            out[key] = _jsonable(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where} is {value}: a manifest holds finite numbers")
        return value
    if isinstance(value, Path):
        return value.as_posix()
    raise ConfigError(
        f"{where} is a {type(value).__name__} ({_short(value)}), which a JSON manifest "
        "cannot hold: pass numbers, strings, lists, mappings or dataclasses"
    )


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class Manifest:
    """What :func:`read_manifest` returns: the parsed manifest of one artefact."""

    path: Path  #: the manifest file
    kind: str  #: what the artefact is: ``dataset``, ``mdp``, ``agent``, ...
    artefact: str  #: the artefact's file or directory name (beside the manifest)
    content: dict[str, Any]  #: :func:`content_hash` of the artefact when written
    config: dict[str, Any]  #: the settings that made it
    schema: FeatureSchema | None  #: the feature schema of its rows, if any
    code: dict[str, Any]  #: :func:`code_version` of the writer
    parents: tuple[dict[str, Any], ...]  #: kind, artefact and sha256 of each input
    created: str  #: UTC time of writing, ISO 8601
    extra: dict[str, Any] = field(default_factory=dict)  #: free-form notes

    @property
    def sha256(self) -> str:
        """The artefact's content digest."""
        return str(self.content["sha256"])

    @property
    def version(self) -> str:
        """Short id ``<kind>:<first 12 hex digits of the content digest>``."""
        return f"{self.kind}:{self.sha256[:12]}"

    @property
    def artefact_path(self) -> Path:
        return self.path.parent / self.artefact

    def as_parent(self) -> dict[str, Any]:
        """The record a child artefact keeps of this one."""
        return {"kind": self.kind, "artefact": self.artefact, "sha256": self.sha256}


def manifest_path(artefact_path: str | os.PathLike[str]) -> Path:
    """``<artefact>.manifest.json`` beside the artefact (a trailing ``/`` is
    ignored)."""
    p = Path(os.fspath(artefact_path).rstrip("/") or "/")
    if p.name in {"", ".", ".."}:
        raise ConfigError(f"cannot name a manifest for the artefact path {p}")
    return p.with_name(p.name + MANIFEST_SUFFIX)


def _parent_record(parent: Any) -> dict[str, Any]:
    if isinstance(parent, Manifest):
        return parent.as_parent()
    if isinstance(parent, (str, os.PathLike)):
        return read_manifest(parent).as_parent()
    raise ConfigError(
        f"a parent must be a Manifest or the path of a versioned artefact, got "
        f"{_short(parent)}"
    )


def write_manifest(
    artefact_path: str | os.PathLike[str],
    kind: str,
    config: Any = None,
    schema: FeatureSchema | None = None,
    parents: Iterable[Manifest | str | os.PathLike[str]] = (),
    extra: Mapping[str, Any] | None = None,
) -> Manifest:
    """Hash the artefact and write its manifest beside it (atomically); return it.

    ``config`` is a mapping or a dataclass of JSON-representable values (tuples become
    lists; NaN is refused). ``parents`` are the manifests (or the paths of versioned
    artefacts) this one was made from. Write the manifest *after* the artefact is
    complete: the digest is of the bytes on disk now.
    """
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise ConfigError(
            f"kind must be a lower-case word like 'dataset', 'mdp' or 'agent', got "
            f"{kind!r}"
        )
    if schema is not None and not isinstance(schema, FeatureSchema):
        raise ConfigError(f"schema must be a FeatureSchema, got {_short(schema)}")
    artefact = Path(os.fspath(artefact_path).rstrip("/") or "/")
    content = content_hash(artefact)
    if isinstance(parents, (str, os.PathLike, Manifest)):
        parents = [parents]
    payload = {
        "format": MANIFEST_FORMAT,
        "kind": kind,
        "artefact": artefact.name,
        "content": content,
        "config": _jsonable({} if config is None else config, "config"),
        "schema": None if schema is None else schema.to_dict(),
        "code": code_version(),
        "parents": [_parent_record(p) for p in parents],
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "extra": _jsonable(dict(extra or {}), "extra"),
    }
    if not isinstance(payload["config"], dict):
        raise ConfigError(
            f"config must be a mapping or a dataclass, got {_short(config)}"
        )
    target = manifest_path(artefact)
    with atomic_write(target, "w") as handle:
        json.dump(payload, handle, indent=1, sort_keys=True)
        handle.write("\n")
    return read_manifest(artefact)


_MANIFEST_KEYS = {
    "format": str,
    "kind": str,
    "artefact": str,
    "content": dict,
    "config": dict,
    "schema": (dict, type(None)),
    "code": dict,
    "parents": list,
    "created": str,
    "extra": dict,
}


def read_manifest(artefact_path: str | os.PathLike[str]) -> Manifest:
    """The manifest beside ``artefact_path``, checked for form (not against the
    artefact's bytes: that is :func:`verify`).

    A missing manifest raises :class:`FileNotFoundError`; unreadable JSON, a missing or
    mistyped field, another format or a manifest of another artefact raise
    :class:`~pulse_lib.errors.DataFormatError` naming the manifest file and the field.
    """
    artefact = Path(os.fspath(artefact_path).rstrip("/") or "/")
    path = manifest_path(artefact)
    if not path.exists():
        raise FileNotFoundError(
            f"{artefact} has no manifest: expected {path} (write it with "
            "write_manifest)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"manifest {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DataFormatError(
            f"manifest {path} must hold a JSON object, got {type(data).__name__}"
        )
    for key, kind in _MANIFEST_KEYS.items():
        if key not in data:
            raise DataFormatError(f"manifest {path} has no field {key!r}")
        if not isinstance(data[key], kind):
            raise DataFormatError(
                f"manifest {path}: field {key!r} has the wrong type "
                f"({type(data[key]).__name__})"
            )
    if data["format"] != MANIFEST_FORMAT:
        raise DataFormatError(
            f"manifest {path} has format {data['format']!r}; this reader knows "
            f"{MANIFEST_FORMAT!r}"
        )
    if data["artefact"] != artefact.name:
        raise DataFormatError(
            f"manifest {path} describes {data['artefact']!r}, not {artefact.name!r}"
        )
    content = data["content"]
    if (
        content.get("type") not in {"file", "directory"}
        or not isinstance(content.get("sha256"), str)
        or not _HEX64.fullmatch(content["sha256"])
        or (
            content["type"] == "directory"
            and not isinstance(content.get("files"), dict)
        )
    ):
        raise DataFormatError(
            f"manifest {path}: field 'content' is malformed ({_short(content)})"
        )
    for i, parent in enumerate(data["parents"]):
        if not isinstance(parent, dict) or not {"kind", "artefact", "sha256"} <= set(
            parent
        ):
            raise DataFormatError(
                f"manifest {path}: parents[{i}] needs kind, artefact and sha256, got "
                f"{_short(parent)}"
            )
    schema = (
        None
        if data["schema"] is None
        else FeatureSchema.from_dict(data["schema"], f"manifest {path}: field 'schema'")
    )
    return Manifest(
        path=path,
        kind=data["kind"],
        artefact=data["artefact"],
        content=content,
        config=data["config"],
        schema=schema,
        code=data["code"],
        parents=tuple(data["parents"]),
        created=data["created"],
        extra=data["extra"],
    )


def verify(artefact_path: str | os.PathLike[str], kind: str | None = None) -> Manifest:
    """Read the manifest and check the artefact's bytes against it; return the
    manifest.

    Raises :class:`~pulse_lib.errors.DataFormatError` naming the file whose digest
    differs (for a directory: every changed, added or removed file), and
    :class:`~pulse_lib.errors.SchemaError` if ``kind`` is given and differs.
    """
    manifest = read_manifest(artefact_path)
    if kind is not None and manifest.kind != kind:
        raise SchemaError(
            f"{manifest.artefact_path} is a {manifest.kind!r} artefact, not a {kind!r}"
        )
    artefact = manifest.artefact_path
    now = content_hash(artefact)
    was = manifest.content
    if now["type"] != was["type"]:
        raise DataFormatError(
            f"{artefact} is a {now['type']} but its manifest {manifest.path} describes "
            f"a {was['type']}"
        )
    if now["sha256"] == was["sha256"]:
        return manifest
    if now["type"] == "file":
        raise DataFormatError(
            f"{artefact} does not match its manifest {manifest.path}: sha256 "
            f"{now['sha256'][:12]}... now, {was['sha256'][:12]}... when written "
            "(the file changed after its manifest was written, or the manifest was "
            "edited)"
        )
    old, new = was["files"], now["files"]
    changed = sorted(
        n for n in set(old) & set(new) if old[n].get("sha256") != new[n]["sha256"]
    )
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    parts = []
    for label, names in (("changed", changed), ("added", added), ("removed", removed)):
        if names:
            parts.append(f"{label}: {', '.join(names[:5])}")
    detail = "; ".join(parts) or "the manifest's file list was edited"
    raise DataFormatError(
        f"{artefact} does not match its manifest {manifest.path}: {detail}"
    )


# --------------------------------------------------------------------------- datasets


def write_versioned_parquet(
    frame: Any,
    path: str | os.PathLike[str],
    config: Any = None,
    schema: FeatureSchema | None = DEFAULT_SCHEMA,
    parents: Iterable[Manifest | str | os.PathLike[str]] = (),
    kind: str = "dataset",
) -> Manifest:
    """Write a DataFrame to Parquet (atomically) and its manifest; return the
    manifest.

    With a ``schema`` the frame must hold every feature column (a missing one is a
    SchemaError naming it).
    """
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise ConfigError(
            f"frame must be a pandas DataFrame, got {type(frame).__name__}"
        )
    if schema is not None:
        _check_columns(frame, schema, "frame")
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return write_manifest(path, kind, config, schema, parents)


def read_versioned_parquet(
    path: str | os.PathLike[str], schema: FeatureSchema | None = None
) -> tuple[Any, Manifest]:
    """Verify and read a Parquet file written by :func:`write_versioned_parquet`.

    With ``schema`` the file's schema must equal it (SchemaError naming the
    difference). Returns ``(frame, manifest)``.
    """
    import pandas as pd

    manifest = verify(path)
    if schema is not None:
        _check_schema_equal(schema, manifest.schema, f"dataset {manifest.artefact}")
    return pd.read_parquet(manifest.artefact_path), manifest


def _check_columns(frame: Any, schema: FeatureSchema, what: str) -> None:
    missing = [n for n in schema.names if n not in frame.columns]
    if missing:
        raise SchemaError(
            f"{what} lacks {len(missing)} feature column(s) of schema version "
            f"{schema.version}: {missing[:5]}"
        )


def _check_schema_equal(
    expected: FeatureSchema, got: FeatureSchema | None, what: str
) -> None:
    if got is None:
        raise SchemaError(f"{what} carries no feature schema in its manifest")
    diff = expected.difference(got)
    if diff is not None:
        raise SchemaError(f"{what} has another feature schema: {diff}")


# --------------------------------------------------------------------------- MDP


@dataclass(frozen=True)
class MDPDefinition:
    """An MDP as the pipeline defines it: states, actions, reward, discount."""

    schema: FeatureSchema  #: the state: ordered features and their version
    actions: tuple[str, ...] = ("wait", "send")  #: action names, by index
    gamma: float = 0.99  #: discount
    reward: str = "ltv"  #: name of the reward definition the transitions use
    step: str = "day"  #: what one time step is
    notes: str = ""  #: free text: anything a reader of the MDP should know

    def __post_init__(self) -> None:
        if not isinstance(self.schema, FeatureSchema):
            raise ConfigError(
                f"MDPDefinition.schema must be a FeatureSchema, got {self.schema!r}"
            )
        actions = tuple(self.actions)
        if len(actions) < 2 or len(set(actions)) != len(actions):
            raise ConfigError(
                f"MDPDefinition.actions needs two or more distinct names, got {actions}"
            )
        if not isinstance(self.gamma, (int, float)) or not 0.0 < self.gamma <= 1.0:
            raise ConfigError(
                f"MDPDefinition.gamma must be in (0, 1], got {self.gamma}"
            )
        object.__setattr__(self, "actions", actions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema.to_dict(),
            "actions": list(self.actions),
            "gamma": float(self.gamma),
            "reward": self.reward,
            "step": self.step,
            "notes": self.notes,
        }


def save_mdp(
    mdp: MDPDefinition,
    path: str | os.PathLike[str],
    config: Any = None,
    parents: Iterable[Manifest | str | os.PathLike[str]] = (),
) -> Manifest:
    """Write the MDP definition as JSON (atomically) with its manifest (kind
    ``mdp``)."""
    if not isinstance(mdp, MDPDefinition):
        raise ConfigError(f"mdp must be an MDPDefinition, got {type(mdp).__name__}")
    with atomic_write(path, "w") as handle:
        json.dump(mdp.to_dict(), handle, indent=1)
    return write_manifest(path, "mdp", config, mdp.schema, parents)


def load_mdp(path: str | os.PathLike[str]) -> MDPDefinition:
    """Verify and read an MDP definition written by :func:`save_mdp`."""
    manifest = verify(path, kind="mdp")
    try:
        data = json.loads(manifest.artefact_path.read_text(encoding="utf-8"))
        schema = FeatureSchema.from_dict(data.pop("schema"), f"{path}: schema")
        return MDPDefinition(schema=schema, **data)
    except (json.JSONDecodeError, KeyError, TypeError, ConfigError) as exc:
        raise DataFormatError(f"MDP definition {path} is malformed: {exc}") from exc


# --------------------------------------------------------------------------- agents

_WEIGHTS = "weights.pt"
_SPEC = "agent.json"


def _architecture(net: Any) -> dict[str, Any]:
    from torch import nn

    linears = [layer for layer in net.body if isinstance(layer, nn.Linear)]
    return {
        "n_features": int(linears[0].in_features),
        "n_actions": int(net.n_actions),
        "n_quantiles": int(net.n_quantiles),
        "hidden": [int(layer.out_features) for layer in linears[:-1]],
    }


def _weights_digest(net: Any, schema: FeatureSchema, arch: Mapping[str, Any]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([schema.to_dict(), dict(arch)], sort_keys=True).encode())
    for name, tensor in net.state_dict().items():
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}|{array.dtype}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class VersionedAgent:
    """A trained Q-network with the feature schema it was trained on and a version.

    ``version`` is ``agent:<12 hex digits>``: a digest of the weights, the architecture
    and the schema, so two agents with equal weights and schema have equal versions
    wherever they were saved. Scoring methods take the data's :class:`FeatureSchema`
    and refuse another one (SchemaError naming the difference): an agent trained on
    feature version 1 never silently scores version 2 rows.

    Inference only reads the weights, so one agent may serve several threads at once.
    """

    def __init__(
        self,
        net: Any,
        schema: FeatureSchema = DEFAULT_SCHEMA,
        config: Any = None,
        manifest: Manifest | None = None,
    ) -> None:
        from pulse_lib.pulserl.agents import QuantileQNetwork

        if not isinstance(net, QuantileQNetwork):
            raise ConfigError(
                f"net must be a QuantileQNetwork (e.g. TorchCQL(...).net), got "
                f"{type(net).__name__}"
            )
        if not isinstance(schema, FeatureSchema):
            raise ConfigError(f"schema must be a FeatureSchema, got {_short(schema)}")
        self.architecture = _architecture(net)
        if self.architecture["n_features"] != schema.width:
            raise ConfigError(
                f"the network takes {self.architecture['n_features']} features but the "
                f"schema lists {schema.width}"
            )
        # a frozen copy: training the original further cannot change what this
        # version scores
        self.net = copy.deepcopy(net).eval().requires_grad_(False)
        self.schema = schema
        self.config = _jsonable({} if config is None else config, "config")
        self.manifest = manifest
        self.digest = _weights_digest(self.net, schema, self.architecture)
        self._prepare_small_batches()

    def _prepare_small_batches(self) -> None:
        """Transposed hidden weights and the mean-over-quantiles head, once: a single
        decision then costs three matrix products and no copies of the weights."""
        import torch
        from torch import nn

        net = self.net
        linears = [layer for layer in net.body if isinstance(layer, nn.Linear)]
        self._hidden = [(m.weight.t().contiguous(), m.bias) for m in linears[:-1]]
        head = linears[-1]
        shape = (net.n_actions, net.n_quantiles)
        self._w_mean = head.weight.view(*shape, -1).mean(dim=1).t().contiguous()
        self._b_mean = head.bias.view(*shape).mean(dim=1)
        self._torch = torch

    def _small_q(self, obs: np.ndarray) -> np.ndarray:
        """The same products as :func:`~pulse_lib.pulserl.agents.score_mean_q` for
        up to one chunk of rows, with the prepared weights."""
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(obs)
            for weight, bias in self._hidden:
                x = torch.addmm(bias, x, weight).relu_()
            return torch.addmm(self._b_mean, x, self._w_mean).numpy()

    @classmethod
    def from_cql(
        cls, agent: Any, schema: FeatureSchema = DEFAULT_SCHEMA
    ) -> VersionedAgent:
        """Wrap a trained :class:`~pulse_lib.pulserl.agents.TorchCQL` (its online
        network and its config)."""
        return cls(agent.net, schema=schema, config=agent.config)

    @property
    def version(self) -> str:
        return f"agent:{self.digest[:12]}"

    def __repr__(self) -> str:
        return (
            f"VersionedAgent({self.version}, features {self.schema.width} "
            f"v{self.schema.version})"
        )

    # ---------------------------------------------------------------- persistence

    def save(
        self,
        path: str | os.PathLike[str],
        parents: Iterable[Manifest | str | os.PathLike[str]] = (),
    ) -> Manifest:
        """Write the agent to the directory ``path`` (``weights.pt`` and
        ``agent.json``) and its manifest beside it; return the manifest.

        The directory must be new or hold only a previous save (other files would enter
        the content hash): anything else is a ConfigError. The files' bytes depend only
        on the weights, the architecture and the schema, so saving the same agent again
        (anywhere, any time) gives the same content hash.
        """
        import torch

        root = Path(path)
        if root.exists() and not root.is_dir():
            raise ConfigError(f"agent path {root} is a file: give a directory")
        if root.is_dir():
            strays = sorted(
                p.name for p in root.iterdir() if p.name not in {_WEIGHTS, _SPEC}
            )
            if strays:
                raise ConfigError(
                    f"agent directory {root} holds other files ({strays[:3]}): save to "
                    "a new or empty directory"
                )
        root.mkdir(parents=True, exist_ok=True)
        # to a file object, not a path: torch.save names the zip archive's inner folder
        # after a path's stem (here the atomic write's random temporary name) and
        # derives .data/serialization_id from those names, so equal weights saved by
        # path got different bytes, and a new content hash, on every save. A file
        # object gets the fixed folder name "archive": equal weights, equal bytes.
        with atomic_write(root / _WEIGHTS, "wb") as handle:
            torch.save(self.net.state_dict(), handle)
        spec = {
            "version": self.version,
            "digest": self.digest,
            "architecture": self.architecture,
            "schema": self.schema.to_dict(),
        }
        with atomic_write(root / _SPEC, "w") as handle:
            json.dump(spec, handle, indent=1)
        self.manifest = write_manifest(
            root,
            "agent",
            self.config,
            self.schema,
            parents,
            extra={"agent_version": self.version},
        )
        return self.manifest

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VersionedAgent:
        """Verify the directory against its manifest, rebuild the network and check
        that the weights give the recorded version (DataFormatError otherwise)."""
        import torch

        from pulse_lib.pulserl.agents import QuantileQNetwork

        manifest = verify(path, kind="agent")
        root = manifest.artefact_path
        try:
            spec = json.loads((root / _SPEC).read_text(encoding="utf-8"))
            arch = spec["architecture"]
            schema = FeatureSchema.from_dict(spec["schema"], f"{root / _SPEC}: schema")
            net = QuantileQNetwork(
                n_features=int(arch["n_features"]),
                n_actions=int(arch["n_actions"]),
                n_quantiles=int(arch["n_quantiles"]),
                hidden=tuple(int(h) for h in arch["hidden"]),
            )
        except FileNotFoundError as exc:
            raise DataFormatError(
                f"agent directory {root} lacks {exc.filename}"
            ) from exc
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(f"{root / _SPEC} is malformed: {exc!r}") from exc
        if manifest.schema is None or manifest.schema.difference(schema) is not None:
            raise DataFormatError(
                f"agent {root}: the schema in {_SPEC} differs from its manifest's"
            )
        try:
            state = torch.load(root / _WEIGHTS, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except FileNotFoundError as exc:
            raise DataFormatError(f"agent directory {root} lacks {_WEIGHTS}") from exc
        except (RuntimeError, KeyError, ValueError) as exc:
            raise DataFormatError(
                f"{root / _WEIGHTS} does not fit the architecture {arch}: {exc}"
            ) from exc
        agent = cls(net, schema=schema, config=manifest.config, manifest=manifest)
        if agent.version != spec.get("version"):
            raise DataFormatError(
                f"agent {root}: weights give version {agent.version}, {_SPEC} records "
                f"{spec.get('version')}"
            )
        return agent

    # ---------------------------------------------------------------- scoring

    def check_schema(self, schema: FeatureSchema | None) -> None:
        """Raise SchemaError unless ``schema`` equals the agent's, naming the
        difference."""
        if not isinstance(schema, FeatureSchema):
            raise SchemaError(
                f"agent {self.version} scores data of a known FeatureSchema only; got "
                f"{_short(schema)}"
            )
        diff = self.schema.difference(schema)
        if diff is not None:
            raise SchemaError(
                f"agent {self.version} refuses this data: it was trained on schema "
                f"{self.schema.fingerprint} (feature version {self.schema.version}, "
                f"{self.schema.width} features); the data differs: {diff} "
                "('here' = the agent, 'there' = the data)"
            )

    def q_values(self, obs: Any, schema: FeatureSchema) -> np.ndarray:
        """``(n, actions)`` mean Q-values of rows ``obs`` laid out by ``schema``.

        ``obs`` must be ``(n, width)`` and finite (SchemaError naming the row
        otherwise).
        """
        from pulse_lib.pulserl.agents import SCORING_CHUNK, score_mean_q
        from pulse_lib.validation import check_array

        self.check_schema(schema)
        if not (
            isinstance(obs, np.ndarray)
            and obs.dtype.kind == "f"
            and obs.ndim == 2
            and obs.shape[1] == self.schema.width
            and obs.shape[0] > 0
            and np.isfinite(obs).all()
        ):  # the full check, with its error naming the row, only when needed
            obs = check_array("obs", obs, shape=(None, self.schema.width))
        arr = np.ascontiguousarray(obs, dtype=np.float32)
        if arr.shape[0] <= SCORING_CHUNK:
            return self._small_q(arr)
        return score_mean_q(self.net, arr)

    def decide(self, obs: Any, schema: FeatureSchema) -> tuple[np.ndarray, np.ndarray]:
        """Greedy actions ``(n,)`` and Q-values ``(n, actions)`` of rows ``obs``."""
        q = self.q_values(obs, schema)
        return q.argmax(axis=1), q

    def q_values_frame(self, frame: Any, schema: FeatureSchema) -> np.ndarray:
        """:meth:`q_values` of a DataFrame's feature columns (any column order; a
        missing column is a SchemaError naming it)."""
        self.check_schema(schema)
        _check_columns(frame, schema, "the frame")
        return self.q_values(frame[list(schema.names)].to_numpy(np.float64), schema)

    def score_dataset(self, path: str | os.PathLike[str]) -> np.ndarray:
        """Verify a versioned Parquet dataset and score it with its own manifest's
        schema (refused if that differs from the agent's)."""
        manifest = read_manifest(path)
        _check_schema_equal(
            self.schema, manifest.schema, f"dataset {manifest.artefact}"
        )
        frame, manifest = read_versioned_parquet(path, self.schema)
        return self.q_values_frame(frame, manifest.schema)  # type: ignore[arg-type]
