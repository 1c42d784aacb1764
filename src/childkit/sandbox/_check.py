"""The text and status of ``childkit sandbox-check``: one line per layer, and a verdict."""

from __future__ import annotations

from collections.abc import Mapping

from childkit.sandbox._config import LayerStatus

#: Layers an isolated child goes without when this machine lacks them: a uid of its own
#: is only given when asked for (``isolation_uid=True``); without cgroups the child is
#: kept to one process (then the layer is there), or, without seccomp or with
#: ``allow_subprocesses``, the limits hold per process (the report says what that
#: multiplies to).
OPTIONAL_LAYERS: frozenset[str] = frozenset({"isolation_uid", "aggregate_limits"})


def full_sandbox_available(layers: Mapping[str, LayerStatus]) -> bool:
    """Whether an isolated child with the default config gets every layer here."""
    return all(s.supported for name, s in layers.items() if name not in OPTIONAL_LAYERS)


def check_text(layers: Mapping[str, LayerStatus]) -> str:
    """A table of the layers :func:`childkit.sandbox.probe` found, and a verdict line."""
    width = max(len(name) for name in layers)
    lines = [f"{name:<{width}}  {'supported' if s.supported else 'MISSING  '}  {s.reason}"
             for name, s in layers.items()]
    missing = [name for name, s in layers.items()
               if not s.supported and name not in OPTIONAL_LAYERS]
    if missing:
        lines.append("isolated children fail here unless allow_reduced=True (missing: "
                     f"{', '.join(missing)})")
    else:
        lines.append("every layer is supported: isolated children get the full sandbox")
    if "isolation_uid" in layers and not layers["isolation_uid"].supported:
        lines.append("isolation_uid=True is refused here (needs root)")
    aggregate = layers.get("aggregate_limits")
    if aggregate is not None and not aggregate.supported:
        lines.append("limits hold per process here, not for a child's processes together")
    elif aggregate is not None and "kept to one process" in aggregate.reason:
        lines.append("no cgroups here: an isolated child is kept to one process (fork, "
                     "vfork, clone: EAGAIN), so its limits hold for all of it; with "
                     "ResourceLimits(allow_subprocesses=True) it may start processes, and "
                     "its memory and CPU limits then hold per process (they multiply)")
    return "\n".join(lines)
