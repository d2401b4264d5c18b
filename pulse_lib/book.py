"""Helpers every chapter calls: profiles, seeds, device, paths and the closing
version stamp."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pulse_lib.errors import ConfigError, PathError

if TYPE_CHECKING:
    import pandas as pd
    from IPython.display import Markdown

#: The profiles every chapter defines. ``auto`` resolves to one of them at run time.
PROFILE_NAMES: tuple[str, ...] = ("ci", "full")

#: Packages named in every chapter's version stamp (others may be added per chapter).
KEY_PACKAGES: tuple[str, ...] = (
    "pulse-lib",
    "numpy",
    "pandas",
    "scipy",
    "matplotlib",
    "seaborn",
    "torch",
    "gymnasium",
    "d3rlpy",
    "pymc",
    "pytensor",
    "arviz",
    "cmdstanpy",
    "nutpie",
)


def on_colab() -> bool:
    """True inside a Google Colab kernel."""
    return "google.colab" in sys.modules


def gpu_available() -> bool:
    """True when torch is installed and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_profile(
    profiles: Mapping[str, Mapping[str, Any]], profile: str
) -> dict[str, Any]:
    """Return the settings of ``profile`` from a chapter's ``PROFILES`` table.

    ``profile="auto"`` picks ``full`` where torch sees a GPU and ``ci`` elsewhere (Colab
    CPU runtimes included, and it says so), so the same notebook is small on a laptop or
    in CI and full size where a reader has the hardware. Both profiles must define the
    same keys, so a reader can see every setting side by side.
    """
    if not isinstance(profiles, Mapping):
        raise ConfigError(
            "PROFILES must map profile names to settings, got "
            f"{type(profiles).__name__}"
        )
    not_mappings = [
        k
        for k in PROFILE_NAMES
        if k in profiles and not isinstance(profiles[k], Mapping)
    ]
    if not_mappings:
        raise ConfigError(
            f"PROFILES: profile(s) {not_mappings} must be dicts of settings"
        )
    missing = [name for name in PROFILE_NAMES if name not in profiles]
    if missing:
        raise ConfigError(
            f"PROFILES lacks the profile(s) {missing}; define {list(PROFILE_NAMES)}"
        )
    keys = {name: set(profiles[name]) for name in PROFILE_NAMES}
    if keys["ci"] != keys["full"]:
        raise ConfigError(
            "profiles 'ci' and 'full' must set the same keys; differing: "
            f"{sorted(keys['ci'] ^ keys['full'])}"
        )
    if profile == "auto":
        # A Colab CPU runtime is no place for a full run (hours of training): only a GPU
        # is.
        if gpu_available():
            profile = "full"
        else:
            profile = "ci"
            where = "Colab without a GPU" if on_colab() else "no GPU"
            print(
                f"profile 'auto': {where}, so the small 'ci' profile runs "
                "(pass profile='full' to force the reproduction setting)"
            )
    if profile not in PROFILE_NAMES:
        raise ConfigError(
            f"unknown profile {profile!r}; choose one of "
            f"{list(PROFILE_NAMES)} or 'auto'"
        )
    print(f"profile: {profile}")
    return dict(profiles[profile], profile=profile)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and (if installed) torch; return a fresh NumPy
    ``Generator``."""
    if (
        isinstance(seed, (bool, np.bool_))
        or not isinstance(seed, (int, np.integer))
        or seed < 0
    ):
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if seed >= 2**63:
        raise ConfigError(f"seed must be below 2**63 (torch's limit), got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.manual_seed(int(seed))
    return np.random.default_rng(int(seed))


def setup_torch(threads: int | None = None) -> str:
    """Pick the device (``cuda`` when present, else ``cpu``) and pin CPU threads.

    On CPU, torch defaults to all cores; with another process busy that collapses
    throughput, so CI (``CI`` set) and the book runner use one thread. Returns the
    device name.
    """
    import torch

    if threads is None:
        raw = os.environ.get(
            "PULSE_TORCH_THREADS", "1" if os.environ.get("CI") else "0"
        )
        try:
            threads = int(raw)
        except ValueError:
            raise ConfigError(
                f"PULSE_TORCH_THREADS must be an integer, got {raw!r}"
            ) from None
    from pulse_lib.validation import check_integer

    threads = check_integer("threads", threads, low=0)  # 0: torch's default
    if threads > 0:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {device} (torch threads: {torch.get_num_threads()})")
    return device


def _is_checkout(path: Path) -> bool:
    return (path / "_toc.yml").is_file() and (path / "pulse_lib").is_dir()


def _installed_from() -> Path | None:
    """The local directory ``pip install <dir>`` installed this package from (PEP 610),
    if any.

    A non-editable install lives in site-packages, away from the clone; pip records
    where it came from in the distribution's ``direct_url.json``.
    """
    import json
    from urllib.parse import unquote, urlparse

    # every pulse-lib on sys.path: a build's pulse_lib.egg-info in the clone has no
    # record
    for dist in importlib.metadata.distributions(name="pulse-lib"):
        try:
            text = dist.read_text("direct_url.json")
            url = urlparse(json.loads(text)["url"]) if text else None
        except (ValueError, KeyError, TypeError):
            continue
        if url is not None and url.scheme == "file":
            return Path(unquote(url.path))
    return None


def repo_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The book's checkout, which holds ``datasets/``, ``chapters/`` and
    ``benchmarks/``.

    In order: ``$PULSE_BOOK_ROOT`` (the Colab setup cell sets it to the clone; it must
    exist); the first parent of ``start`` (default: the working directory) that is a
    checkout; the checkout this module was imported from (an editable install or
    ``PYTHONPATH``); the directory a non-editable ``pip install <clone>`` was installed
    from (pip's record of it). Anything else is a :class:`ConfigError` saying to set
    ``PULSE_BOOK_ROOT``. A ``start`` that does not exist is a :class:`FileNotFoundError`
    (a file: :class:`PathError`).
    """
    env = os.environ.get("PULSE_BOOK_ROOT")
    if env:
        path = Path(env).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(
                f"PULSE_BOOK_ROOT={env} is not a directory: point it at "
                "the book's clone"
            )
        return path
    here = Path(start or Path.cwd()).expanduser().resolve()
    # a typo must not fall back to another checkout
    if start is not None and not here.is_dir():
        if not here.exists():
            raise FileNotFoundError(
                f"repo_root: the start folder {here} does not exist"
            )
        raise PathError(
            f"repo_root: the start folder {here} is a file, not a directory"
        )
    for candidate in (here, *here.parents):
        if _is_checkout(candidate):
            return candidate
    package_parent = Path(__file__).resolve().parent.parent
    if (package_parent / "_toc.yml").is_file():
        return package_parent
    source = _installed_from()
    if source is not None and _is_checkout(source):
        return source
    raise ConfigError(
        f"cannot find the book's checkout from {here}: run inside the repository or "
        "set "
        "PULSE_BOOK_ROOT to it (e.g. os.environ['PULSE_BOOK_ROOT'] = "
        "'/content/rl-marketing-book')"
    )


def datasets_dir() -> Path:
    """``datasets/`` of the checkout (shipped data)."""
    return repo_root() / "datasets"


def generated_dir() -> Path:
    """``datasets/generated/``: where chapters write data they generate (ignored by
    git)."""
    path = datasets_dir() / "generated"
    path.mkdir(parents=True, exist_ok=True)
    return path


def markdown_table(frame: pd.DataFrame, floatfmt: str | None = None) -> Markdown:
    """A DataFrame as a Markdown pipe table, for ``display()`` in a chapter.

    Chapters build their result tables with this, so every number in a table was printed
    by the cell, never typed by hand. Floats are formatted with ``floatfmt`` (e.g.
    ``".3g"``) when given, else with ``str``. The index is not shown: ``reset_index()``
    first to keep it.
    """
    import pandas as pd
    from IPython.display import Markdown

    if not isinstance(frame, pd.DataFrame):
        raise ConfigError(
            "markdown_table: frame must be a pandas DataFrame, got "
            f"{type(frame).__name__}"
        )
    if floatfmt is not None:
        try:
            format(0.5, floatfmt)
        except (ValueError, TypeError):
            raise ConfigError(
                f"markdown_table: floatfmt {floatfmt!r} is not a float format"
            ) from None

    def cell(value: Any) -> str:
        if floatfmt is not None and isinstance(value, (float, np.floating)):
            return format(value, floatfmt)
        return str(value)

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = [
        "| " + " | ".join(cell(v) for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return Markdown("\n".join([header, rule, *rows]))


def mean_ci(
    values: Sequence[float] | np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """Mean and half-width of a Student-t interval over independent runs (seeds,
    datasets).

    The book's one rule for "mean ± 95 % interval over seeds": Student-t with ``n - 1``
    degrees of freedom (few seeds make a normal interval too narrow). With one value the
    half-width is ``nan``: one run says nothing about the spread. NaN or infinite
    values, an empty input or a level outside (0, 1) are errors, never dropped silently.
    """
    from scipy import stats

    from pulse_lib.validation import check_array, check_scalar

    if isinstance(values, (str, bytes, Mapping)):
        raise ConfigError(
            "mean_ci: values must be a sequence of numbers, got "
            f"{type(values).__name__}"
        )
    x = check_array(
        "mean_ci: values", values, ndim=1, allow_empty=True, error=ConfigError
    )
    if x.size == 0:
        raise ConfigError("mean_ci: values is empty (no values given)")
    check_scalar(
        "mean_ci: level", level, low=0.0, high=1.0, low_open=True, high_open=True
    )
    if x.size < 2:
        return float(x[0]), float("nan")
    scale = float(np.max(np.abs(x)))
    # rescaled so huge values cannot overflow the spread
    y = x / scale if scale > 0 else x
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * y.std(ddof=1) / np.sqrt(x.size)
    mean, half = float(y.mean() * (scale or 1.0)), float(half * (scale or 1.0))
    if not (np.isfinite(mean) and np.isfinite(half)):
        raise ConfigError(
            f"mean_ci: values too large for a float interval (max |value| {scale:g})"
        )
    return mean, half


def format_ci(
    values: Sequence[float] | np.ndarray, digits: int = 3, level: float = 0.95
) -> str:
    """``"mean ± half-width"`` from :func:`mean_ci` (``"mean (one run)"`` for a
    single value)."""
    from pulse_lib.validation import check_integer

    digits = check_integer("format_ci: digits", digits, low=0, high=15)
    mean, half = mean_ci(values, level)
    if np.isnan(half):
        return f"{mean:.{digits}f} (one run)"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def load_benchmark(name: str) -> dict[str, Any] | None:
    """``benchmarks/results/<name>.json`` as a dict, or ``None`` (with a note) if not
    recorded.

    A result file that exists but is not valid JSON, or has no ``machine`` record, is an
    error: a chapter must never show a number whose provenance is unknown.
    """
    import json
    import re

    from pulse_lib.errors import DataFormatError

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ConfigError(
            "benchmark name must be a plain file stem like 'pulserl_scoring', got "
            f"{name!r}"
        )
    path = repo_root() / "benchmarks" / "results" / f"{name}.json"
    if not path.exists():
        print(
            f"{path.name} has not been recorded yet: run `python benchmarks/{name}.py`"
        )
        return None
    if not path.is_file():
        raise DataFormatError(
            f"{path}: a benchmark result must be a file, not a directory"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{path}: not a valid benchmark result ({err})") from err
    if not isinstance(data, dict) or "machine" not in data:
        raise DataFormatError(
            f"{path}: no 'machine' record; re-run benchmarks/{name}.py"
        )
    return data


def benchmark_provenance(data: Mapping[str, Any], name: str) -> str:
    """One italic line: which script recorded a result, when, on what machine and
    load."""
    from pulse_lib.errors import DataFormatError

    m = data.get("machine") if isinstance(data, Mapping) else None
    if not isinstance(m, Mapping):
        raise DataFormatError(
            f"benchmark result {name!r}: no 'machine' record (a dict) in it"
        )
    load = m.get("load_average_1_5_15min")
    text = (
        f"*Recorded by `benchmarks/{name}.py` on {m.get('date', '?')}: "
        f"{m.get('cores', '?')} cores ({m.get('cpu_model', '?')}), "
        f"torch threads {m.get('torch_threads', '?')}"
    )
    if load:
        text += (
            f", load average {load[0]:.1f} at the time "
            "(timings on a busy machine are pessimistic)"
        )
    return text + ".*"


def show_benchmark(name: str) -> dict[str, Any] | None:
    """Load a benchmark result (:func:`load_benchmark`) and display where it was
    measured."""
    data = load_benchmark(name)
    if data is not None:
        from IPython.display import Markdown, display

        display(Markdown(benchmark_provenance(data, name)))
    return data


def package_versions(packages: Sequence[str] = KEY_PACKAGES) -> dict[str, str]:
    """Installed version of each package, or ``"not installed"``."""
    if isinstance(packages, (str, bytes)):
        raise ConfigError(
            f"packages must be a list of names, not the string {packages!r}"
        )
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def version_stamp(extra: Sequence[str] = ()) -> None:
    """Print the versions this notebook ran with, and the device it ran on."""
    print(version_text(extra))


def version_text(extra: Sequence[str] = ()) -> str:
    """The text of :func:`version_stamp`: Python, machine, device and package
    versions."""
    if isinstance(extra, (str, bytes)):
        raise ConfigError(
            f"extra must be a list of package names, not the string {extra!r}"
        )
    versions = package_versions(tuple(KEY_PACKAGES) + tuple(extra))
    try:
        import torch

        device = (
            f"cuda ({torch.cuda.get_device_name(0)})"
            if torch.cuda.is_available()
            else "cpu"
        )
        threads = torch.get_num_threads()
    except ImportError:
        device, threads = "cpu", 0
    lines = [
        (
            f"Python {platform.python_version()} on {platform.system()} "
            f"{platform.machine()}, "
            f"{os.cpu_count()} cores, device {device}, torch threads {threads}"
        ),
        *(
            f"{name:>12} {version}"
            for name, version in versions.items()
            if version != "not installed"
        ),
    ]
    return "\n".join(lines)


def quiet_imports() -> None:
    """Import the legacy ``gym`` package once, without its "Gym has been unmaintained"
    notice.

    d3rlpy 2.x still imports ``gym`` beside gymnasium, and ``gym`` prints a four-line
    notice
    to stderr on import, with no switch to turn it off. The book never uses ``gym`` (it
    uses
    gymnasium), so the notice is noise on every page that imports d3rlpy. Call this
    before
    ``import d3rlpy``: it imports ``gym`` with exactly that notice dropped (anything
        else gym
    prints still shows); later imports are silent because Python caches the module. Does
    nothing when ``gym`` is not installed or already imported.
    """
    import contextlib
    import io

    if "gym" in sys.modules:
        return
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            import gym
    except ImportError:
        return
    finally:
        printed = captured.getvalue()
    try:
        from gym_notices.notices import notices

        notice = notices.get(getattr(gym, "__version__", ""), "")
    except ImportError:
        notice = ""
    if notice:
        printed = printed.replace(notice + "\n", "", 1)
    if printed:
        sys.stderr.write(printed)
