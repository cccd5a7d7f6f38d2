"""The live dashboard (``castwatch dashboard``): see docs/dashboard.md."""


class DashboardError(RuntimeError):
    """The dashboard cannot start as asked; the message says what to do."""
