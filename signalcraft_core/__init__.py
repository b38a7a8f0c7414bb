"""SignalCraft scoring: grade machine recordings NORMAL / WARNING / CRITICAL from normal-only models."""

__version__ = "0.1.0"
