"""The ``imgrad`` command line (installed as ``imgrad_cli``): a thin layer over :mod:`imgrad`."""
