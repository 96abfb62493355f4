"""Webhook signature verification and normalisation, one module per gateway."""
