"""The performance API and the live dashboard: one :class:`PerformanceApi` per app, subsystems plugged in through
:class:`Subsystem` (see ``subsystems.py``)."""

from spotik.performance.api.router import PerformanceApi
from spotik.performance.api.subsystems import (
    CacheClearing,
    ComponentHealth,
    Subsystem,
    SubsystemFactory,
    SubsystemRegistry,
)

__all__ = ["CacheClearing", "ComponentHealth", "PerformanceApi", "Subsystem", "SubsystemFactory", "SubsystemRegistry"]
