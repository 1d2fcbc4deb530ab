"""Built-in task plugins.

Each sub-package registers its task when imported. They are found through the
`transferkit.tasks` entry points in setup.cfg, the same group a third-party
plugin declares, so nothing here lists them.
"""
