"""Print ``name==lowest`` for each package named on the command line, from pyproject.toml's ranges
(``"lightning>=2.5.0,<3"`` -> ``lightning==2.5.0``): what .ci/run installs in its second venv."""

import re
import sys
from pathlib import Path

text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
lowest = {name: re.search(rf'"{re.escape(name)}>=([\w.]+)', text).group(1) for name in sys.argv[1:]}
print(" ".join(f"{name}=={version}" for name, version in lowest.items()))
