"""The model's parts: posterior families, likelihoods, networks, objectives, and the VAE that wires them.

Nothing here knows of training, run folders or screens."""
