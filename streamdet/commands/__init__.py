"""Sub-commands of the ``streamdet`` command line that outgrew ``cli.py``."""
