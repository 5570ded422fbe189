"""What a long-lived host (a Functions worker) builds once and reuses: settings, logging, the
store client and the pipeline. Built on first use, so importing the app stays cheap."""

from __future__ import annotations

from functools import lru_cache

from aegis import log, settings
from aegis.correlate import detections
from aegis.correlate.engine import Correlator
from aegis.pipeline import Pipeline
from aegis.store import open_store


@lru_cache(maxsize=1)
def pipeline() -> Pipeline:
    cfg = settings.get()
    log.configure_from_settings(cfg)
    store = open_store(cfg)
    correlator = Correlator(detections.load().detections, store, lateness=cfg.lateness)
    return Pipeline(store, limits=cfg.limits, correlator=correlator)
