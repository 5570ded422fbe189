"""What a long-lived host (a Functions worker) builds once and reuses: settings, logging, the
store client and the pipeline. Built on first use, so importing the app stays cheap."""

from __future__ import annotations

from functools import lru_cache

from aegis import log, settings
from aegis.correlate import detections
from aegis.correlate.engine import Correlator
from aegis.pipeline import Pipeline
from aegis.store import Store, open_store


def build_pipeline(cfg: settings.Settings, store: Store) -> Pipeline:
    """The correlating pipeline on `store`, with the detections in `detections/` (validated here)."""
    correlator = Correlator(detections.load().detections, store, lateness=cfg.lateness)
    return Pipeline(store, limits=cfg.limits, correlator=correlator)


@lru_cache(maxsize=1)
def pipeline() -> Pipeline:
    cfg = settings.get()
    log.configure_from_settings(cfg)
    return build_pipeline(cfg, open_store(cfg))
