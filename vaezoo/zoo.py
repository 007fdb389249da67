"""Making and checking a zoo of weights: add a trained model to a zoo folder, measure its metric again.

The layer above :mod:`vaezoo.registry`: writing an entry builds a fresh model by name (``vaezoo.get``) and
measuring a metric of codes loads the pretrained VQ-VAE whose codes a prior models, so these functions live
here and not in :mod:`vaezoo.pretrained`, which reads manifests and loads checked weights and imports nothing
of the registry (timm keeps its ``_registry`` below ``_pretrained`` the same way: one direction only).

Used by ``benchmarks/pretrained_zoo.py`` (which builds the shipped zoo), by the tests that measure the
shipped models again, and by anyone making a zoo of their own (then point ``VAEZOO_PRETRAINED_DIR`` at it).

Example:

>>> import vaezoo
>>> from vaezoo import zoo
>>> model = vaezoo.get("vae", pretrained=True)                                   # doctest: +SKIP
>>> zoo.measure(model, vaezoo.pretrained_info("vae").check, data_dir="data")     # doctest: +SKIP
91.33
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

from vaezoo import fileio, registry
from vaezoo import pretrained as _pretrained


def measure(model, metric: Mapping[str, Any], data_dir=None) -> float:
    """Measure ``metric`` (a manifest ``metric`` or ``check``) of ``model`` again, as it was measured.

    ``metric["data"]`` holds the :func:`vaezoo.data.load` arguments of the evaluation data (name,
    split, binarize, seed, batch_size, limit, and ``labels`` for a conditional model; never shuffled: a
    dynamic binarization with a fixed seed and batch size is one fixed set of binary images). ``metric["name"]`` is

    * ``"test_error"``: the percent of labelled examples whose most probable class under ``model.classify``
      is not their label (m2's q(y|x));
    * ``"test_nll"``: importance-sampled negative log-likelihood, nats per example
      (:func:`vaezoo.evaluate.log_likelihood` with ``num_samples``, ``batch_size`` and ``seed``); for a prior
      over codes, its exact NLL of the codes;
    * ``"test_<metric>"`` (``"test_loss"``, ``"test_reconstruction"``, ...): that metric of the model's own
      ``model.evaluate``. For a prior over codes the loss is its negative log-likelihood of the codes and
      for a VQ-VAE the reconstruction is -log p(x | z_q(x)), both deterministic, in nats (``codes_of``:
      the pretrained VQ-VAE, ``name.tag``, whose codes a prior models).
    """
    import numpy as np

    from vaezoo import data, evaluate

    spec = dict(metric["data"])
    ds = data.load(spec.pop("name"), spec.pop("split"), data_dir=data_dir, shuffle=False, **spec)
    if metric.get("codes_of"):
            ds = data.codes_dataset(registry.get(metric["codes_of"], pretrained=True), ds)
    if metric["name"] == "test_error":  # a classifier's (``classify``, e.g. m2's q(y|x)) percent error
        if not hasattr(model, "classify"):
            raise ValueError(f"Metric 'test_error' needs a model that classifies; {type(model).__name__} does not.")
        batches = list(ds)
        if not isinstance(batches[0], (tuple, list)):
            raise ValueError("Metric 'test_error' needs labelled data: set \"labels\": true in its data.")
        wrong = sum(int(np.sum(np.argmax(model.classify(x), axis=-1) != y.numpy())) for x, y in batches)
        return 100.0 * wrong / sum(int(y.shape[0]) for _, y in batches)
    if metric["name"] == "test_nll" and model.input_kind != "codes":
        batches = list(ds)
        if isinstance(batches[0], (tuple, list)):  # labelled data (``"labels": true``): log p(x|y) of a conditional model
            images = (np.concatenate([b[0].numpy() for b in batches]), np.concatenate([b[1].numpy() for b in batches]))
        else:
            images = np.concatenate([b.numpy() for b in batches])
        # Without XLA: XLA's stateless generator draws other samples, and the manifest's values are these draws.
        return float(evaluate.log_likelihood(model, images, num_samples=metric["num_samples"],
                                             batch_size=metric["batch_size"], seed=metric["seed"],
                                             jit_compile=False).nll)
    if metric["name"].startswith("test_"):
        if not model.compiled:
            model.compile()
        values = model.evaluate(ds, return_dict=True, verbose=0)
        if metric["name"][5:] in values:
            return float(values[metric["name"][5:]])
    valid = {"test_nll", *(f"test_{k}" for k in (values if metric["name"].startswith("test_") else ["loss"]))}
    raise ValueError(f"Unknown metric {metric['name']!r} for {type(model).__name__}; valid choices: "
                     f"{', '.join(sorted(valid))}.")


def add(model, tag: str, *, config: Mapping[str, Any], dataset: str, schedule: Mapping[str, Any], epochs: int,
        metric: Mapping[str, Any], check: Mapping[str, Any], folder: str | os.PathLike, default: bool = False,
        prior: str | None = None, command: str = "", notes: str = "") -> _pretrained.Pretrained:
    """Write ``model``'s weights as ``name.tag`` into the zoo ``folder`` and record it in its manifest.

    Used by ``benchmarks/pretrained_zoo.py`` (which builds the shipped zoo) and by anyone making a
    zoo of their own (then point ``VAEZOO_PRETRAINED_DIR`` at ``folder``). Files are written atomically;
    ``default=True`` makes this tag the one ``pretrained=True`` picks (and clears the flag of the others).
    """
    name = getattr(model, "registry_name", None) or model.name
    registry.model_info(name)  # a registered model, or KeyError
    if not tag or not tag.replace("_", "").isalnum():
        raise ValueError(f"A tag is letters, digits and underscores, got {tag!r}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    file = f"{name}.{tag}.weights.h5"
    fresh = registry.get(name, **config)  # uncompiled: the file holds the model's weights, not an optimizer's state
    fresh.set_weights(model.get_weights())
    with fileio.atomic_path(folder / file) as tmp:
        fresh.save_weights(tmp)  # tmp keeps the name's .weights.h5 ending, which Keras requires
    entries = {k: dataclasses.asdict(e) for k, e in _pretrained.manifest(folder).items()}
    if default:
        for entry in entries.values():
            if entry["name"] == name:
                entry["default"] = False
    full = registry.get_config(name, **config)
    first = not any(e["name"] == name for e in entries.values() if e["tag"] != tag)
    entry = _pretrained.Pretrained(name=name, tag=tag, default=default or first,
                                   config=registry.model_kwargs(name, full), dataset=dataset,
                                   schedule=dict(schedule), epochs=int(epochs), metric=dict(metric),
                                   check=dict(check), file=file, sha256=_pretrained.sha256(folder / file),
                                   bytes=(folder / file).stat().st_size, prior=prior, command=command, notes=notes)
    entries[entry.key] = dataclasses.asdict(entry)
    _pretrained.write_manifest(folder, entries)
    return entry


def remeasure(key: str, folder: str | os.PathLike, data_dir=None, fields=("metric", "check")) -> _pretrained.Pretrained:
    """Measure the ``metric`` and ``check`` (or only the ``fields`` named) of the entry ``key`` in the zoo
    ``folder`` again, as their specs say, and record the new values (the weights are not touched): for when
    the evaluation data change."""
    folder = Path(folder)
    entries = {k: dataclasses.asdict(e) for k, e in _pretrained.manifest(folder).items()}
    if key not in entries:
        raise _pretrained.PretrainedError(f"No entry {key!r} in {folder / _pretrained.MANIFEST_FILE}; entries: {', '.join(sorted(entries))}.")
    entry = entries[key]
    model = registry.get(entry["name"], **entry["config"])
    _pretrained.load_weights(model, _pretrained.Pretrained(**entry), folder)
    unknown = [f for f in fields if f not in ("metric", "check")]
    if unknown or not fields:
        raise ValueError(f"Unknown field {unknown[0] if unknown else None!r}; valid choices: metric, check.")
    for field in fields:
        entry[field] = {**entry[field], "value": round(measure(model, entry[field], data_dir=data_dir), 3)}
    _pretrained.write_manifest(folder, entries)
    return _pretrained.Pretrained(**entry)
