"""A plugin module that replaces a built-in model (override=True): vaezoo must warn, naming both packages."""

import vaezoo


@vaezoo.register_model(name="vae_conv", override=True)
def demo_vae_conv(latent_dim: int = 2):
    return vaezoo.VAE(latent_dim=latent_dim, architecture="conv", conv_filters=(4, 4))
