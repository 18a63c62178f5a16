"""The ``pairbot`` command and the demo: the composition root, the only place that names a
concrete store or provider class."""
