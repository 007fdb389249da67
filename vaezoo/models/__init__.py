"""vaezoo's model families. Importing this package registers the built-in models."""

from vaezoo.models.base import BaseVAE
from vaezoo.models.vae import VAE, BetaVAE

__all__ = ["BaseVAE", "VAE", "BetaVAE"]
