"""Loading a configuration: lookup order, parsing, ``${VAR}`` substitution, overrides.

A file is parsed (TOML, or YAML by its suffix), ``${VAR}`` references are filled
from the environment, relative paths are anchored at the file's folder, the
``$CHATCORE_*`` variables and keyword overrides are applied, and the result is
validated into :class:`~chatcore.config.Config`.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import platformdirs
import yaml
from pydantic import BaseModel, ValidationError

from ._config_errors import dotted, show_value, translate
from ._config_models import APP_NAME, Loc, validate_config
from .errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from ._config_models import Config

USER_CONFIG_NAMES = ("config.toml", "config.yaml", "config.yml")

ENV_CONFIG = "CHATCORE_CONFIG"
ENV_BACKEND = "CHATCORE_BACKEND"
ENV_DATA_DIR = "CHATCORE_DATA_DIR"

SHIPPED_LABEL = "shipped default"
USER_LABEL = "user config"

_VAR_RE = re.compile(
    r"\$(?P<escape>\$\{)"
    r"|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
    r"|(?P<bad>\$\{[^}]*\}?)"
)


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Fill ``${VAR}`` and ``${VAR:-default}`` from ``env``; ``$${`` is a literal ``${``.

    As in the shell, the default also applies when the variable is set but empty.
    Values taken from ``env`` are not expanded again.

    Raises:
        ConfigError: A variable without a default is unset, or a reference is malformed
            (path and key are left empty for the caller to fill in).
    """
    if "$" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        if match["escape"]:
            return "${"
        if match["bad"]:
            raise ConfigError(
                None,
                "",
                f"malformed reference {match['bad']!r} (write ${{NAME}} or "
                "${NAME:-default}; $${ gives a literal ${)",
            )
        name = match["name"]
        default = match["default"]
        value = env.get(name)
        if default is not None:
            return value if value else default
        if value is None:
            raise ConfigError(
                None,
                "",
                f"environment variable {name} is not set "
                f"(write ${{{name}:-default}} to give a fallback)",
            )
        return value

    return _VAR_RE.sub(replace, text)


def _expand_tree(value: Any, env: Mapping[str, str], path: Path, loc: tuple[str | int, ...]) -> Any:
    if isinstance(value, str):
        try:
            return expand_vars(value, env)
        except ConfigError as exc:
            raise ConfigError(path, dotted(loc), exc.problem) from None
    if isinstance(value, dict):
        return {k: _expand_tree(v, env, path, (*loc, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_tree(v, env, path, (*loc, i)) for i, v in enumerate(value)]
    return value


def shipped_config_path() -> Path:
    """The ``default.toml`` shipped with chatcore (package data, or the checkout's config/)."""
    try:
        resource = importlib.resources.files("chatcore.shipped_config") / "default.toml"
    except ModuleNotFoundError:
        resource = None
    if isinstance(resource, Path) and resource.is_file():
        return resource
    return Path(__file__).resolve().parent.parent / "config" / "default.toml"


def user_config_path() -> Path:
    """``config.toml`` in the user config folder (``config.yaml``/``.yml`` if only that exists)."""
    folder = platformdirs.user_config_path(APP_NAME)
    for name in USER_CONFIG_NAMES:
        if (folder / name).is_file():
            return folder / name
    return folder / USER_CONFIG_NAMES[0]


def config_layers(
    explicit: str | Path | None = None, *, env: Mapping[str, str] | None = None
) -> list[tuple[Path, str]]:
    """The files a configuration is read from, each with a label, later ones winning.

    ``--config FILE`` or ``$CHATCORE_CONFIG`` names one complete file, read alone:
    what a script or a test writes is all there is. Otherwise the user config, if it
    exists, layers over the shipped default, so it need only hold what it changes.
    """
    env = os.environ if env is None else env
    if explicit is not None and str(explicit):
        return [(Path(explicit).expanduser(), "--config")]
    from_env = env.get(ENV_CONFIG)
    if from_env:
        return [(Path(from_env).expanduser(), f"${ENV_CONFIG}")]
    layers = [(shipped_config_path(), SHIPPED_LABEL)]
    user = user_config_path()
    if user.is_file():
        layers.append((user, USER_LABEL))
    return layers


def resolve_config_path(
    explicit: str | Path | None = None, *, env: Mapping[str, str] | None = None
) -> tuple[Path, str]:
    """The file that wins: ``--config``, ``$CHATCORE_CONFIG``, user config, shipped default.

    :func:`config_layers` gives every file in effect.

    Returns:
        The path and a label saying where it came from.
    """
    return config_layers(explicit, env=env)[-1]


def _parse(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "", "file is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror or exc}") from None
    data: Any
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(path, "", f"invalid YAML: {exc}") from None
        if data is None:  # an empty YAML document
            data = {}
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(path, "", f"invalid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            path, "", f"expected a table of settings at the top level, got {show_value(data)}"
        )
    return data


def _anchor_paths(data: dict[str, Any], base: Path) -> None:
    """Make relative paths written in the file relative to the file's folder."""

    def anchor(value: Any) -> Any:
        if isinstance(value, str) and value.strip():
            candidate = Path(value).expanduser()
            return value if candidate.is_absolute() else str(base / candidate)
        return value  # not a path: validation will say so

    if "data_dir" in data:
        data["data_dir"] = anchor(data["data_dir"])
    if isinstance(data.get("plugin_dirs"), list):
        data["plugin_dirs"] = [anchor(v) for v in data["plugin_dirs"]]


def _iter_env_overrides(env: Mapping[str, str]) -> Iterator[tuple[str, str, str]]:
    for var, key in ((ENV_BACKEND, "default_backend"), (ENV_DATA_DIR, "data_dir")):
        value = env.get(var)
        if value:
            yield key, value, f"${var}"


def _layer(
    base: dict[str, Any],
    top: dict[str, Any],
    file: Path,
    files: dict[Loc, Path],
    loc: Loc = (),
) -> None:
    """Lay ``top`` over ``base``: tables merge key by key, anything else (lists too) replaces."""
    for key, value in top.items():
        here = (*loc, key)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            files[here] = file  # the table's own origin, for a key missing from it
            _layer(base[key], value, file, files, here)
            continue
        base[key] = value
        for stale in [k for k in files if k[: len(here)] == here]:
            del files[stale]
        _record(value, here, file, files)


def _record(value: Any, loc: Loc, file: Path, files: dict[Loc, Path]) -> None:
    files[loc] = file
    if isinstance(value, dict):
        for key, inner in value.items():
            _record(inner, (*loc, key), file, files)


def load_config(
    path: str | Path | None = None, *, env: Mapping[str, str] | None = None, **overrides: Any
) -> Config:
    """Load, layer, substitute, override and validate a configuration.

    Args:
        path: The one file to read; None follows :func:`config_layers` (the user
            config over the shipped default).
        env: Environment for ``${VAR}`` and ``$CHATCORE_*``; defaults to ``os.environ``.
        **overrides: Top-level keys to replace last (None values are ignored).

    Returns:
        The validated configuration, with ``source`` set to the file that wins and
        ``sources`` to every file read, in order.

    Raises:
        ConfigError: A file is missing, unparsable or invalid; the message names the
            file the offending value came from, the dotted key and the problem.
    """
    env = os.environ if env is None else env
    layers = [file for file, _ in config_layers(path, env=env)]
    data: dict[str, Any] = {}
    files: dict[Loc, Path] = {}
    for file in layers:
        layer = _expand_tree(_parse(file), env, file, ())
        _anchor_paths(layer, file.parent)
        _layer(data, layer, file, files)
    origins: dict[str, str] = {}
    for key, value, origin in _iter_env_overrides(env):
        data[key] = value
        origins[key] = origin
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
            origins[key] = "override"
    for stale in [k for k in files if str(k[0]) in origins]:
        del files[stale]
    return validate_config(
        data, path=layers[-1], origins=origins, files=files, sources=tuple(layers)
    )


SettingsModel = TypeVar("SettingsModel", bound=BaseModel)


def validate_settings(
    model: type[SettingsModel], data: Mapping[str, Any], *, path: Path | None, key: str
) -> SettingsModel:
    """Validate a plugin's own ``config`` table against its settings model.

    Raises:
        ConfigError: naming ``path`` and the dotted key below ``key``
            (e.g. ``plugins[0].config.patterns[1].regex``), for each problem.
    """
    raw = dict(data)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise translate(exc, root=model, path=path, origins={}, raw=raw, prefix=key) from None


def validate_backend_settings(model: type[BaseModel], config: Config, name: str) -> None:
    """Check the plugin-specific keys of ``[backends.NAME]`` against its plugin's settings model.

    The common keys (``BackendConfig``'s fields) were checked when the file was
    loaded; what is left are the plugin's own, and any key its model doesn't name
    is a mistake (``temprature``), listed with every key the table may hold.

    Raises:
        ConfigError: naming the file the bad key came from and ``backends.NAME.KEY``.
    """
    from ._config_models import BackendConfig

    raw = config.backends[name].options
    try:
        model.model_validate(raw)
    except ValidationError as exc:
        files = {(key,): config.file_for(("backends", name, key)) for key in raw}
        raise translate(
            exc,
            root=model,
            path=config.file_for(("backends", name)),
            origins={},
            raw=raw,
            files={loc: file for loc, file in files.items() if file is not None},
            prefix=f"backends.{name}",
            also_allowed=list(BackendConfig.model_fields),
        ) from None
