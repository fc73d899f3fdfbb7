"""python -m flexporter PORT (settings as JSON in FL_EXPORTER_SETTINGS, from entrypoint.py)."""
import json
import logging
import os
import sys

from .exporter import Settings, serve

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
raw = json.loads(os.environ.pop("FL_EXPORTER_SETTINGS"))
raw["organisations"] = tuple(raw["organisations"])
serve(Settings(**raw), int(sys.argv[1]))
