"""Registers one model with vaezoo when imported through the entry point."""

import vaezoo


@vaezoo.register_model(config={"latent_dim": 3})
def demo_tiny_vae(latent_dim: int = 2, hidden_units: tuple[int, ...] = (16,)):
    """A small MLP VAE on 28x28 images."""
    return vaezoo.VAE(latent_dim=latent_dim, hidden_units=hidden_units)
