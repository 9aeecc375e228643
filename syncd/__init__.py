"""syncd: keeps a central analytical PostgreSQL fed from many municipal e-SUS APS PEC databases."""

__version__ = "0.1.0"
