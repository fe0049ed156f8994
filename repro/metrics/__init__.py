"""Metrics: a Fashion-MNIST feature network and FID / KID / precision-recall through torch-fidelity."""

from .featurenet import FeatureNet, WeightsMismatchError, load_feature_net, register, train_feature_net
from .fid import METRICS, as_uint8_images, compute_metrics, extract_features, frechet_distance, load_samples

__all__ = [
    "METRICS",
    "FeatureNet",
    "WeightsMismatchError",
    "as_uint8_images",
    "compute_metrics",
    "extract_features",
    "frechet_distance",
    "load_feature_net",
    "load_samples",
    "register",
    "train_feature_net",
]
