"""What is measured on a trained run: likelihood, latent paths, smoothness, estimators, sample quality."""
