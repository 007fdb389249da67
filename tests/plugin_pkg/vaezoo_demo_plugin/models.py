"""Registers one model with vaezoo when imported through the entry point."""

import keras

import vaezoo


@vaezoo.register_model(config={"latent_dim": 3})
def demo_tiny_vae(latent_dim: int = 2, hidden_units: tuple[int, ...] = (16,)):
    """A small MLP VAE on 28x28 images."""
    return vaezoo.VAE(latent_dim=latent_dim, hidden_units=hidden_units)


@vaezoo.register_model
def demo_factory_vae(**kwargs):
    """A factory function delegating to vaezoo.get (vaezoo.get passes it name=...)."""
    return vaezoo.get("vae", hidden_units=[8], latent_dim=2, **kwargs)


@keras.saving.register_keras_serializable(package="vaezoo_demo_plugin")
class DemoClassVAE(vaezoo.VAE):
    """A model class of the plugin's own: loading its checkpoint needs the plugin imported."""


vaezoo.register_model(DemoClassVAE, name="demo_class_vae", config={"latent_dim": 2, "hidden_units": [8]})
