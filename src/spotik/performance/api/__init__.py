"""The performance API and the live dashboard: one :class:`PerformanceApi` per app (``AppState.performance``),
subsystems plugged in through :class:`Subsystem` (see ``subsystems.py``), routes in ``router.py``."""

from spotik.performance.api.service import PerformanceApi
from spotik.performance.api.subsystems import CacheClearing, ComponentHealth, Subsystem, SubsystemRegistry

__all__ = ["CacheClearing", "ComponentHealth", "PerformanceApi", "Subsystem", "SubsystemRegistry"]
