"""Every method, registered in bridge.registry.REGISTRY on import of this package.

Each module or sub-package directly in this folder is one method (or, for semobridge/ and ape/, the pair a
sub-package's __init__ imports); importing this package imports them all, so a new method is its module
here plus its recipe rows in bridge/recipes/ (tests/test_recipes.py checks the two lists agree).
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
