"""The package's version, in a module of its own: the library's modules and the build read it without loading the
facade (vaekit/__init__.py), which loads every stage."""

__version__ = "0.1.0"
