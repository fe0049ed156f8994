"""repro: run the claims about diffusion transformers instead of arguing about them."""

__version__ = "0.1.0"
