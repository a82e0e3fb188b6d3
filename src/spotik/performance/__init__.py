"""Monitoring and protection: the middleware stack, query and memory monitoring, Prometheus metrics.

Everything app-scoped hangs off one :class:`spotik.performance.monitor.Monitoring` object created by
``create_app``; nothing here keeps module-level state, so two apps can run side by side in one process.
"""
