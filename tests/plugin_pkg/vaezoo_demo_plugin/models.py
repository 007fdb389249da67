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


@keras.saving.register_keras_serializable(package="vaezoo_demo_plugin")
@vaezoo.layers.register_prior("demo_laplace")
class DemoLaplacePrior(vaezoo.layers.Prior):
    """A prior of the plugin's own: a valid `prior:` of every vaezoo model once the plugin is loaded."""

    def call(self, inputs=None):
        import tensorflow as tf
        import tensorflow_probability as tfp

        zeros = tf.zeros([self.latent_dim])
        return tfp.distributions.Independent(tfp.distributions.Laplace(zeros, tf.ones_like(zeros)), 1)

    def from_noise(self, noise):
        import tensorflow_probability as tfp

        d = tfp.distributions
        return d.Laplace(0.0, 1.0).quantile(d.Normal(0.0, 1.0).cdf(noise))
