"""vaezoo's model families. Importing this package registers the built-in models."""

from vaezoo.models.base import BaseVAE
from vaezoo.models.vae import VAE, BetaVAE
from vaezoo.models.conditional import CVAE
from vaezoo.models.semi_supervised import M2
from vaezoo.models.iwae import CIWAE, IWAE, MIWAE, PIWAE, RWS
from vaezoo.models.hierarchical import HierarchicalVAE
from vaezoo.models.bayesian_vae import BayesianVAE
from vaezoo.models.factorvae import FactorVAE
from vaezoo.models.tcvae import BetaTCVAE
from vaezoo.models.dipvae import DIPVAE
from vaezoo.models.mmd import InfoVAE, WAEMMD
from vaezoo.models.categorical import CategoricalVAE
from vaezoo.models.hyperspherical import HypersphericalVAE
from vaezoo.models.vqvae import VQVAE
from vaezoo.models.vqvae2 import VQVAE2
from vaezoo.models.pixelcnn import HierarchicalPixelCNNPrior, PixelCNNPrior

__all__ = ["BaseVAE", "BayesianVAE", "VAE", "BetaVAE", "CVAE", "M2", "IWAE", "MIWAE", "CIWAE", "PIWAE", "RWS", "HierarchicalVAE", "FactorVAE", "BetaTCVAE", "DIPVAE", "InfoVAE", "WAEMMD", "CategoricalVAE", "HypersphericalVAE", "VQVAE", "VQVAE2", "PixelCNNPrior", "HierarchicalPixelCNNPrior"]
