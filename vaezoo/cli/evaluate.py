"""``vaezoo evaluate``: the test bound and log p(x), sample quality (``--samples``), disentanglement (``--metrics``)."""

from __future__ import annotations

import time

import keras
import numpy as np

from vaezoo import data, evaluate, pictures
from vaezoo.cli import common
from vaezoo.cli.errors import UsageError


def cmd_evaluate(args) -> int:
    if args.metrics:
        return _evaluate_disentanglement(args)
    if args.samples:
        return _evaluate_samples(args)
    cfg = common.data_config(args)
    model = common.model_from(args)
    if args.num_samples and not hasattr(model, "log_weights"):
        raise UsageError(
            f"--num-samples estimates log p(x) for continuous-latent models (VAE, BetaVAE, IWAE); "
            f"{type(model).__name__} has discrete codes."
        )
    ds = common.dataset(cfg, args.split, args, limit=args.limit, shuffle=False, labels=pictures.conditional(model))
    results = model.evaluate(ds, return_dict=True, verbose=args.verbose)
    print(f"{args.name} on {cfg['dataset']}:{args.split} (nats per example)")
    for key, value in results.items():
        print(f"  {key:>15s}: {value:.4f}")
    if args.num_samples:
        ll = evaluate.log_likelihood(model, ds, num_samples=args.num_samples, seed=args.seed or 0)
        print(f"  {'log p(x)':>15s}: {ll.mean:.4f}  (importance sampled, {args.num_samples} samples)")
        print(f"  {'NLL':>15s}: {ll.nll:.4f} +- {ll.standard_error:.4f}")
        print(f"  {'bits/dim':>15s}: {ll.bits_per_dim:.4f}")
    return 0


def _evaluate_samples(args) -> int:
    """``evaluate --samples N``: FID, KID, precision and recall of N samples against the split's images."""
    from vaezoo import metrics

    cfg = common.data_config(args)
    classifier = args.classifier or metrics.default_classifier(cfg["dataset"])
    extractor = metrics.FeatureExtractor(classifier)
    model = common.model_from(args)
    if tuple(model.data_shape) != extractor.data_shape:
        raise UsageError(f"the {classifier} classifier reads {extractor.data_shape} images; {args.name} draws "
                         f"{tuple(model.data_shape)} (pick another with --classifier: "
                         f"{', '.join(metrics.classifier_names())}).")
    real = common.dataset({**cfg, "binarize": "none"}, args.split, args, limit=args.limit, shuffle=False)
    real = np.concatenate([np.asarray(keras.utils.unpack_x_y_sample_weight(b)[0]) for b in real])
    prior, prior_source = common.prior_from(args)
    start = time.monotonic()
    quality = metrics.model_sample_quality(model, real, num_samples=args.samples, classifier=extractor,
                                           seed=args.seed or 0, prior=prior)
    where = f", codes from {prior_source}" if prior is not None else ""
    print(f"{args.name}: {args.samples} samples{where} against {len(real)} images of {cfg['dataset']}:{args.split} "
          f"(features of the {classifier} classifier; {time.monotonic() - start:.0f} s)")
    print(f"  {metrics.describe(quality)}")
    return 0


def _evaluate_disentanglement(args) -> int:
    """``evaluate --metrics``: disentanglement of the posterior means on images with known factors."""
    from vaezoo import disentanglement

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in disentanglement.METRICS]
    if unknown or not metrics:
        raise UsageError(f"--metrics {args.metrics!r}: unknown metric {unknown[0] if unknown else ''!r}; valid "
                         f"choices: {', '.join(disentanglement.METRICS)}.")
    model = common.model_from(args)
    if not hasattr(model, "latent_dim"):
        raise UsageError(f"--metrics scores continuous codes; {type(model).__name__} has discrete codes.")
    height, width, channels = model.data_shape
    if height != width or channels != 1:
        raise UsageError(f"--metrics needs a model of square one-channel images (the sprites); {args.name} reads "
                         f"{tuple(model.data_shape)}.")
    if args.factor_data == "dsprites" and height != 64:
        raise UsageError(f"dSprites images are 64x64; {args.name} reads {height}x{width}.")
    factors = data.factor_data(args.factor_data, data_dir=args.data_dir, size=height)
    start = time.monotonic()
    scores = disentanglement.evaluate(disentanglement.posterior_means(model), factors, metrics,
                                      num_examples=args.num_examples, seed=args.seed or 0)
    print(f"{args.name} on {args.factor_data} ({height}x{width}, factors: {', '.join(factors.factor_names)}; "
          f"{args.num_examples} examples, {time.monotonic() - start:.0f} s)")
    for key, value in scores.items():
        print(f"  {key:>24s}: {value:.4f}")
    return 0
