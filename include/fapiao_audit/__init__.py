"""fapiao-audit: nightly reconciliation of issued VAT invoices against the tax registry."""

__version__ = "0.1.0"
