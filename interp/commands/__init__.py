"""The `interp` sub-commands, one module each; importing a module registers its commands on `interp.cli.app`.

Modules import torch and transformers inside the command functions, so `interp --help` stays instant.
"""
