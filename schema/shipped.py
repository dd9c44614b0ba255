"""The provider catalog shipped with the gateway (``providers.toml``), and the
rules that combine it with an operator's config.

Works on parsed TOML, before validation (``schema/catalog.py`` validates the
result). The rules:

- A shipped provider is enabled when its key variable is set (environment or
  secrets file) or when the operator's config has an entry for it; that
  entry's fields replace the shipped ones (``base_url``, ``models`` …), and
  ``enabled = false`` turns it off. The operator's own providers are enabled
  unless they say ``enabled = false``.
- ``{NAME}`` in a ``base_url`` is filled from the same variables. A provider
  enabled by its key alone whose placeholders are missing stays disabled (with
  a warning); one the operator's config names is a config error.
- A shipped provider serves its own ``models`` plus every shipped model entry
  that names it, unless the operator's entry gives ``models``.
- An operator's ``[models]`` entry replaces a shipped one with the same id.
- A model's candidates are its enabled providers (that serve it, for shipped
  entries), in order; a model with none left is not routable.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any

log = logging.getLogger("gatewayz.config")

PLACEHOLDER = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")

Document = dict[str, Any]


@functools.cache
def shipped_catalog() -> Mapping[str, Any]:
    """The catalog shipped in the package, read and parsed once per process
    (the config loads at every start and in many tests)."""
    text = importlib.resources.files("schema").joinpath("providers.toml").read_text()
    return MappingProxyType(tomllib.loads(text, parse_float=Decimal))


@dataclass(frozen=True)
class Combined:
    """The shipped catalog and an operator's config, combined (not yet validated)."""

    providers: dict[str, Document]  # enabled: name -> entry, placeholders filled
    disabled: dict[str, tuple[Document, str]]  # name -> (entry as configured, why it is off)
    models: dict[str, Document]  # routable: id -> entry, candidates enabled
    shipped_models: frozenset[str]  # model ids whose entry is the shipped one
    shipped_pinned: frozenset[str]  # provider/model ids a shipped provider lists outside any entry
    shipped_price_providers: frozenset[str]  # enabled providers whose price_provider is the shipped one


def combine(shipped: Mapping[str, Any], providers: Mapping[str, Document], models: Mapping[str, Document],
            variables: Mapping[str, str]) -> Combined:
    """``providers`` and ``models`` are the operator's sections; ``variables``
    the environment merged with the secrets file. Raises ValueError for a
    config that cannot be used."""
    shipped_providers: Mapping[str, Document] = shipped.get("providers", {})
    shipped_entries: Mapping[str, Document] = shipped.get("models", {})
    for kind, section in (("provider", providers), ("model", models)):
        for name, entry in section.items():
            if not isinstance(entry, Mapping):
                raise ValueError(f"{kind} {name!r}: expected a table of settings, not {entry!r}")
    merged_models: dict[str, Document] = {**shipped_entries, **models}
    from_shipped = frozenset(model for model in merged_models if model not in models)
    key_variables = {variable for spec in (*shipped_providers.values(), *providers.values())
                     if isinstance(variable := spec.get("api_key_env"), str)}

    enabled: dict[str, Document] = {}
    disabled: dict[str, tuple[Document, str]] = {}
    price_providers: set[str] = set()
    pinned: set[str] = set()
    for name in [*shipped_providers, *(name for name in providers if name not in shipped_providers)]:
        override = providers.get(name)
        base = shipped_providers.get(name, {})
        spec = {**base, **(override or {})}
        switch = spec.pop("enabled", None)
        if switch is not None and not isinstance(switch, bool):
            raise ValueError(f"provider {name!r}: enabled is true or false, not {switch!r}")
        if name in shipped_providers and "models" not in (override or {}):
            spec["models"] = _served(name, base.get("models", []), merged_models, from_shipped)
            pinned.update(f"{name}/{model}" for model in base.get("models", []))
        reason = _why_off(name, spec, switch, override is not None, name in shipped_providers, variables)
        if reason is None:
            reason = _fill_base_url(name, spec, variables, key_variables, required=override is not None)
        if reason is not None:
            disabled[name] = (spec, reason)
            continue
        enabled[name] = spec
        if name in shipped_providers and "price_provider" not in (override or {}):
            price_providers.add(name)
        if spec.get("verified") is False:
            log.warning("provider %s is enabled, but its base URL or auth style is unverified: %s", name,
                        spec.get("notes", "see providers.toml"))

    routable: dict[str, Document] = {}
    for model, entry in merged_models.items():
        named = entry.get("providers")
        if not isinstance(named, list) or not named:
            routable[model] = entry  # validation says what is wrong
            continue
        if model in from_shipped:
            candidates = [p for p in named if p in enabled and model in enabled[p].get("models", [])]
        else:
            # Unknown names stay, so that validation reports them.
            candidates = [p for p in named if p not in disabled]
        if not candidates:
            if model not in from_shipped:
                log.warning("model %s is not routable: its providers are disabled (%s)", model,
                            "; ".join(f"{p}: {disabled[p][1]}" for p in named))
            continue
        upstream_ids = entry.get("upstream_ids", {})
        trimmed = {p: upstream_ids[p] for p in candidates if isinstance(upstream_ids, dict) and p in upstream_ids}
        routable[model] = {**entry, "providers": candidates, **({"upstream_ids": trimmed} if upstream_ids else {})}

    return Combined(
        providers=enabled,
        disabled=disabled,
        models=routable,
        shipped_models=from_shipped & routable.keys(),
        shipped_pinned=frozenset(model for model in pinned if model.partition("/")[0] in enabled),
        shipped_price_providers=frozenset(price_providers),
    )


def _served(name: str, own: list[str], models: Mapping[str, Document], from_shipped: frozenset[str]) -> list[str]:
    """A shipped provider's models: its own list, then every shipped entry naming it."""
    named = [model for model in models if model in from_shipped and name in (models[model].get("providers") or [])]
    return list(dict.fromkeys([*own, *named]))


def _why_off(name: str, spec: Document, switch: bool | None, configured: bool, shipped: bool,
             variables: Mapping[str, str]) -> str | None:
    if switch is False:
        return "enabled = false in the config"
    if not shipped or configured or switch is True:
        return None
    key = spec.get("api_key_env")
    if isinstance(key, str) and variables.get(key):
        return None
    return f"set {key} to enable it" if key else "name it in the config to enable it"


def _fill_base_url(name: str, spec: Document, variables: Mapping[str, str], key_variables: set[str], *,
                   required: bool) -> str | None:
    """Fill the base_url's placeholders in ``spec``; the reason it stays off when some are missing."""
    template = spec.get("base_url")
    if not isinstance(template, str):
        return None
    wanted = list(dict.fromkeys(PLACEHOLDER.findall(template)))
    keys = [variable for variable in wanted if variable in key_variables]
    if keys:
        # A URL is logged and shown in /v1/provider; a key must never be part of one.
        raise ValueError(f"provider {name!r}: base_url must not contain a key variable ({', '.join(keys)})")
    missing = [variable for variable in wanted if not variables.get(variable)]
    if missing:
        if required:
            raise ValueError(f"provider {name!r}: base_url needs {', '.join(missing)} "
                             f"(set in the environment or the secrets file)")
        log.warning("provider %s has its key but stays disabled: base_url needs %s", name, ", ".join(missing))
        return f"base_url needs {', '.join(missing)}"
    spec["base_url"] = PLACEHOLDER.sub(lambda match: variables[match.group(1)], template)
    return None
