"""vaezoo: a model zoo of variational autoencoders on Keras 3, TensorFlow and TFP.

>>> import keras, vaezoo
>>> vaezoo.list_models()
['bayesian_vae', 'beta_tcvae', 'beta_vae', 'beta_vae_conv', 'beta_vae_conv64', 'categorical_vae', 'dip_vae', 'factor_vae', 'hierarchical_pixelcnn_prior',
 'info_vae', 'iwae', 'iwae_conv', 'pixelcnn_prior', 'vae', 'vae_conv', 'vq_vae', 'vq_vae2',
 'wae_mmd']
>>> model = vaezoo.get("beta_vae", beta=4.0)
>>> model.compile(keras.optimizers.Adam(1e-3))
"""

from vaezoo.version import __version__
from vaezoo.cli import parser as _cli_parser  # light: argparse and the config's constants
from vaezoo.config import ConfigError
from vaezoo.registry import (
    get,
    get_config,
    is_model,
    list_models,
    load_plugins,
    model_info,
    register_model,
)
from vaezoo.pretrained import list_pretrained, pretrained_info

# `vaezoo --help` (and each command's) is answered by the parser alone, without TensorFlow; any other use of
# the package imports all of it here, so that `import vaezoo` registers every model with Keras (and
# `keras.models.load_model` then reads vaezoo's .keras files).
if not _cli_parser.help_only():
    with _cli_parser.quiet_tensorflow():
        from vaezoo import bayesian, bounds, flows, callbacks, components, data, distribute, layers, models, training, vq  # noqa: F401  (importing models registers the built-ins)
        from vaezoo import export
        from vaezoo.export import load_exported
        from vaezoo import zoo  # noqa: F401  (making a zoo of weights: above the registry)
        from vaezoo.trainer import TrainResult, train
        from vaezoo.models import CIWAE, DIPVAE, HierarchicalVAE, IWAE, MIWAE, PIWAE, RWS, VAE, BayesianVAE, CategoricalVAE, HypersphericalVAE, InfoVAE, WAEMMD, VQVAE, BaseVAE, BetaTCVAE, BetaVAE, FactorVAE

__all__ = [
    "BaseVAE",
    "BayesianVAE",
    "BetaTCVAE",
    "BetaVAE",
    "DIPVAE",
    "FactorVAE",
    "CategoricalVAE",
    "HypersphericalVAE",
    "callbacks",
    "data",
    "ConfigError",
    "export",
    "InfoVAE",
    "IWAE",
    "MIWAE",
    "CIWAE",
    "PIWAE",
    "RWS",
    "HierarchicalVAE",
    "VAE",
    "VQVAE",
    "WAEMMD",
    "get",
    "get_config",
    "is_model",
    "layers",
    "list_models",
    "list_pretrained",
    "load_exported",
    "load_plugins",
    "model_info",
    "pretrained_info",
    "register_model",
    "train",
    "TrainResult",
]
