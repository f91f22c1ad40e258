"""genie: Genie-style generative interactive worlds (Bruce et al. 2024) that train and play on a CPU."""

__version__ = "0.1.0"
