"""recipes/run.py with the ``skimage_patches`` data set known to the config: python recipes/results_run.py ...

The config's table of data shapes (``pixel_lightning.config.DATA_SHAPES``) does not list the scikit-image
photo patches yet, so ``data.name=skimage_patches`` is refused by plain ``recipes/run.py``. This adds the
DataModule's own (image_shape, levels) to that table, then runs exactly what ``recipes/run.py`` runs. Once
config.py lists the data set this file is a plain alias and can go.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from pixel_lightning import config
    from pixel_lightning.data import PhotoPatchesDataModule as Photos
    from pixel_lightning.runner import main as run_main

    config.DATA_SHAPES.setdefault(Photos.name, (Photos.image_shape, Photos.levels))
    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main())
