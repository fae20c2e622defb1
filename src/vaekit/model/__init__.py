"""The model's parts: posterior families, likelihoods, networks, objectives, and the VAE that wires them.

Nothing here knows of training, run folders or screens. Importing the package imports every module in it, so that
each part registers itself (`vaekit.parts`) and a new part is one new file here.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
