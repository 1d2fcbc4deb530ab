"""The YAMNet preset's format version, read by the family's declaration and written by its importer.

2: the backbone takes whole clips and the preset records its normalization (1 took patches).
"""

PRESET_VERSION = 2
